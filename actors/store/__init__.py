"""Where answers are kept: the store actor (`actor`, SQLite in WAL mode in its own thread), its
records and queries (`schema`), session recordings as WAV files (`recording`), and the replicas'
leases on sessions and resume tokens (`leases`: the SQL; `keeper`: what a replica holds)."""
