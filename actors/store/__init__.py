"""Where answers are kept: the store actor (`actor`, SQLite in WAL mode in its own thread), its
records and queries (`schema`), start-up recovery (`recovery`), session recordings as WAV files
(`recording`) and where finished ones are kept (`recordings`: a directory, or `s3`)."""
