"""Plan-time guards against hostile configs: a name the config supplies that becomes a path
component is one plain folder name, and every path the plan builds from the config stays under
the root it belongs to (`results/{run}`, `logs/{run}`, `resources/hub`, `resources/calibration`).
Each refusal is one ConfigError naming the config key, before any job runs.

The checks are lexical (no symlink is followed): a `results/` that is a symlink to another disk is
the user's own choice, while a `..` or `/` in a name is never meant.
"""

from __future__ import annotations

import os
import unicodedata

from pipeline.config import ConfigError

# bytes of one path component: Linux's 255 less the affixes of the hidden siblings an output is
# written through (`.NAME.partial-0123456789ab.lock`, a sweep's `.ID.points.json.partial-...`)
NAME_MAX = 200


def bad_component(part: str) -> str | None:
    """Why `part` cannot be one path component; None when it can."""
    if part in ("", ".", ".."):
        return f"{part!r} is no folder name"
    if "/" in part or "\\" in part:
        return "it holds a '/' or '\\'"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in part):
        return "it holds a control character (NUL, newline, ...)"
    size = len(part.encode("utf-8", "surrogatepass"))
    if size > NAME_MAX:
        return f"it is {size} bytes long; a file name may have at most {NAME_MAX}"
    return None


def check_component(part: str, key: str) -> None:
    """`part` is one plain path component, else a ConfigError naming `key`."""
    reason = bad_component(str(part))
    if reason:
        raise ConfigError(key, f"{str(part)!r} cannot name a file or folder: {reason}")


def check_inside(path: str, root: str, key: str) -> None:
    """`path` lies under `root` component by component (none empty, `.`, `..`, with a control
    character or over-long) and after normalisation; else a ConfigError naming `key`."""
    if not path.startswith(root + "/"):
        reason = f"it is not under {root}/"
    else:
        reason = next(filter(None, map(bad_component, path[len(root) + 1 :].split("/"))), None)
    inside = os.path.normpath(f"/{path}").startswith(os.path.normpath(f"/{root}") + "/")
    if reason is None and not inside:  # unreachable with the components checked; kept as a net
        reason = f"it leaves {root}/"
    if reason:
        raise ConfigError(key, f"the planned path {path!r} is refused: {reason}")
