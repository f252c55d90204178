"""The one error a user sees for a bad scenario."""


class ScenarioError(ValueError):
    """A scenario value that cannot be used.

    ``str()`` reads ``"<key>: <value> <problem>; allowed: <allowed>"`` so the
    user can find the line in the YAML and knows what to put there instead.
    Several problems found at once are joined, one per line.
    """

    def __init__(self, key: str, value, problem: str, allowed: str | None = None):
        self.key, self.value, self.problem, self.allowed = key, value, problem, allowed
        text = f"{key}: {value!r} {problem}" if value is not None else f"{key}: {problem}"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class ScenarioErrors(ScenarioError):
    """Several :class:`ScenarioError` found in one pass over a scenario."""

    def __init__(self, errors: list[ScenarioError]):
        self.errors = errors
        first = errors[0]
        super().__init__(first.key, first.value, first.problem, first.allowed)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return self.args[0]
