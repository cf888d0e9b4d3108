"""Where answers are kept: the store actor (`actor`, its writer `writer`) over SQLite in WAL mode
or PostgreSQL (`database`, `sql`, `migrations`), its records and queries (`schema`), start-up
recovery (`recovery`), session recordings as WAV files (`recording`) and where finished ones
are kept (`recordings`: a directory, or `s3`)."""
