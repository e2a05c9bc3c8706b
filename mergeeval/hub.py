"""The Hugging Face Hub for both packages: a revision resolved to its commit, the hub's refusals as
one clear InputError each, and bounded retries of a download after a transient network error.

The endpoint and token are huggingface_hub's own (HF_ENDPOINT, HF_TOKEN); a token is never written
to logs or files.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from mergeeval.errors import InputError

COMMIT = re.compile(r"[0-9a-f]{40}")
RETRY_PAUSES_S = (2, 10, 30)  # pauses before the 2nd, 3rd and 4th attempt of a download
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}

T = TypeVar("T")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "the Hugging Face Hub"


@contextmanager
def hub_errors(repo_id: str, revision: str, kind: str = "model") -> Iterator[None]:
    """Turn the hub's answers about a missing repository or revision, or a gated one, into an
    InputError that names the repository, the revision and the fix."""
    from huggingface_hub.errors import (
        GatedRepoError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise InputError(
            f"{kind} {repo_id} is gated on {endpoint()}; accept its terms and set HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise InputError(
            f"{kind} {repo_id} has no revision {revision!r} on {endpoint()}; give a branch, tag "
            "or commit it has"
        ) from None
    except RepositoryNotFoundError:
        raise InputError(
            f"{kind} {repo_id} (revision {revision!r}) was not found on {endpoint()}; check the "
            "repo id and revision, or set HF_TOKEN for a private or gated repo"
        ) from None
    except OfflineModeIsEnabled:
        raise InputError(
            f"{kind} {repo_id}@{revision}: the hub is needed but HF_HUB_OFFLINE is set; unset it"
        ) from None


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (1, true, yes, on), read now."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_commit(repo_id: str, revision: str, kind: str = "model") -> str:
    """The commit that `revision` (a branch, tag or commit) of the hub repo names. Offline
    (HF_HUB_OFFLINE) a full commit is taken as given: the local cache has it or not."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE and COMMIT.fullmatch(revision):
        return revision
    with hub_errors(repo_id, revision, kind):
        return HfApi().repo_info(repo_id, revision=revision, repo_type=kind).sha


def transient(error: BaseException | None) -> bool:
    """A dropped connection, a timeout or a server-side status (its cause included)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    while error is not None:
        if isinstance(error, httpx2.TransportError):
            return True
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            return error.response.status_code in TRANSIENT_STATUS
        error = error.__cause__ or error.__context__
    return False


def with_retries(fn: Callable[[], T], what: str, pauses=RETRY_PAUSES_S) -> T:
    """`fn()`, tried again after each pause while it fails with a transient network error."""
    for pause in pauses:
        try:
            return fn()
        except Exception as e:
            if not transient(e):
                raise
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"warning: {what}: {reason}; trying again in {pause} s", file=sys.stderr)
            time.sleep(pause)
    return fn()
