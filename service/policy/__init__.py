"""Who may come in, and how much: API keys and origins (`security`), host names (`hosts`),
size, time and concurrency limits (`limits`), admission by measured capacity (`capacity`), and
the shape of a refusal (`refusal`)."""
