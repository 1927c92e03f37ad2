"""`--profile FILE` on train, serve and plan: the user's calibration profile, applied where a
command resolves its GPUs by name (specs.catalog.use_calibration), for the whole command."""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, ContextManager

from parasim.errors import InputError

HELP = ("Calibration profile (`parasim calibrate -o`): every GPU runs with the profile's factors for "
        "its software (docs/calibration.md).")


def load(path: str | Path):
    """The profile at `path`, read and checked once per command although `calibration`, `applied`
    and `profile_errors` all need it (keyed by the file's mtime and size, so an edited file is read
    again; an unreadable one raises its InputError every time, as errors are not cached)."""
    p = Path(path)
    try:
        st = p.stat()
        version = (st.st_mtime_ns, st.st_size)
    except OSError:
        version = None
    return _load(str(p), version)


@lru_cache(maxsize=8)
def _load(path: str, version: tuple[int, int] | None):  # noqa: ARG001 - the cache key
    from parasim.specs.profile import load_profile

    return load_profile(path)


def calibration(path: str | Path | None, *, software: str | None = None, executor: str = "local") -> ContextManager[Any]:
    """A context inside which the command's GPUs carry the profile's factors (nothing without a
    profile). Ray workers do not share this process's state, so a profile with --executor ray is
    refused rather than silently ignored."""
    if path is None:
        return nullcontext()
    if executor == "ray":
        raise InputError("profile", "is applied in this process and its forked workers; use --executor local")
    from parasim.specs.catalog import use_calibration

    return use_calibration(load(path).calibration(software))


def engine_name(engine: Any) -> str | None:
    """The engine a `serve --engine NAME[==VERSION]` names, as a profile scopes it."""
    if not engine:
        return None
    from parasim.engines.lookup import engine_software

    return engine_software(engine)[0].name


def applied(path: str | Path, software: str | None, gpu: str) -> dict[str, Any]:
    """What the output says a profile did: the file and the factors it put on this GPU (empty:
    the profile has no entry for this software and GPU, and the catalog ran as shipped)."""
    out: dict[str, Any] = {"profile": str(path), "factors": load(path).factors_for(software, gpu).values}
    if not out["factors"]:  # said, never silent: a --profile that changed nothing
        out["note"] = (f"no entry of profile {Path(path).name} applies to {software or 'this software'} on {gpu}: "
                       "the catalog ran as shipped")
        import typer

        typer.echo(f"note: {out['note']}", err=True)
    return out


def profile_errors(path: str | Path | None, software: str | None, gpu: str,
                   metrics: tuple[str, ...]) -> dict[str, dict[str, Any]] | None:
    """A profile's own out-of-fold |error| for `expected_error` (validation.expected_error's
    `profile_errors`): pooled over the metrics it was fitted on, so quoted for every metric class.
    None without a profile or when its entry recorded none (the validated table is quoted then)."""
    if path is None:
        return None
    oof = load(path).out_of_fold(software, gpu)
    try:
        p50, p90, runs = float(oof["p50_abs_error"]), float(oof["p90_abs_error"]), int(oof["runs"])
    except (TypeError, KeyError, ValueError):
        return None
    if not (0 <= p50 <= p90 < 1e3 and runs > 0):  # a hand-edited record that cannot be an error figure
        return None
    err = {"p50_abs_pct": round(100 * p50, 1), "p90_abs_pct": round(100 * p90, 1), "runs": runs,
           "name": f"profile {Path(path).name}"}
    return {m: err for m in metrics}
