"""Typed reading of one JSON object of a request: protocol 2 has no defaults, so every key is required, none other is
allowed, and an error names the key by its path."""

from __future__ import annotations

from typing import Any

from .errors import WorkerError


def check_keys(data: dict[str, Any], path: str | None, keys: tuple[str, ...]) -> None:
    """Protocol 2 has no defaults: every key is required (a nullable one present, possibly null) and an unknown key
    is refused. `bad_request` naming the first key at fault by its path (`path.key`, or `key` at the top)."""
    missing = [f"{path}.{key}" if path else key for key in keys if key not in data]
    if missing:
        names = ", ".join(f"`{where}`" for where in missing)
        raise WorkerError(
            None, "bad_request",
            f"{names} {'is' if len(missing) == 1 else 'are'} missing (protocol 2 requires every key)",
            field=missing[0],
        )
    for key in data:
        if key not in keys:
            where = f"{path}.{key}" if path else str(key)
            raise WorkerError(
                None, "bad_request", f"`{where}` is not a key of this request (expected {', '.join(keys)})", field=where
            )


class Reader:
    """Typed access to one JSON object of a request whose keys must be exactly `keys`, reporting the path of a
    missing, unknown or bad value (manifest paths for the export job: `spec.model.dtype`)."""

    def __init__(self, data: Any, path: str, keys: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise WorkerError(None, "bad_request", f"`{path}` must be an object", field=path)
        check_keys(data, path, keys)
        self.data: dict[str, Any] = data
        self.path = path

    def field(self, key: str) -> str:
        return f"{self.path}.{key}"

    def _typed(self, key: str, kinds: tuple[type, ...], nullable: bool) -> Any:
        value = self.data[key]
        if value is None:
            if nullable:
                return None
            raise WorkerError(None, "bad_request", f"`{self.field(key)}` must not be null", field=self.field(key))
        ok = not (isinstance(value, bool) and bool not in kinds) and isinstance(value, kinds)
        if not ok:
            names = " or ".join(kind.__name__ for kind in kinds)
            raise WorkerError(
                None, "bad_request", f"`{self.field(key)}` must be {names}, not {value!r}", field=self.field(key)
            )
        return value

    def text(self, key: str) -> str:
        return str(self._typed(key, (str,), False))

    def opt_text(self, key: str) -> str | None:
        value = self._typed(key, (str,), True)
        return None if value is None else str(value)

    def flag(self, key: str) -> bool:
        return bool(self._typed(key, (bool,), False))

    def integer(self, key: str) -> int:
        return int(self._typed(key, (int,), False))

    def opt_integer(self, key: str) -> int | None:
        value = self._typed(key, (int,), True)
        return None if value is None else int(value)

    def number(self, key: str) -> float:
        return float(self._typed(key, (int, float), False))

    def opt_number(self, key: str) -> float | None:
        value = self._typed(key, (int, float), True)
        return None if value is None else float(value)

    def array(self, key: str) -> list[Any]:
        return list(self._typed(key, (list,), False))

    def opt_array(self, key: str) -> list[Any] | None:
        value = self._typed(key, (list,), True)
        return None if value is None else list(value)

    def mapping(self, key: str) -> dict[str, Any]:
        return dict(self._typed(key, (dict,), False))

    def opt_mapping(self, key: str) -> dict[str, Any] | None:
        value = self._typed(key, (dict,), True)
        return None if value is None else dict(value)

    def raw(self, key: str) -> Any:
        return self.data[key]

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in choices:
            raise WorkerError(
                None,
                "bad_request",
                f"`{self.field(key)}` is {value!r}; expected one of {', '.join(choices)}",
                field=self.field(key),
            )
        return value
