"""Who may come in, and how much: the checks in front of every route (`security`), over API
keys and addresses (`identity`), origins (`origins`) and host names (`hosts`); the admitted
caller (`caller`); size, time and concurrency limits (`limits`), admission by measured capacity
(`capacity`), and the shape of a refusal (`refusal`)."""
