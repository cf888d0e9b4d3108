"""Where answers are kept: the store actor (`actor`, SQLite in WAL mode in its own thread), its
records and queries (`schema`) and session recordings as WAV files (`recording`)."""
