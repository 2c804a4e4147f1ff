"""The commits of the Hub branches a sweep measures, learnt without downloading a weight
(one request per repository for its branches), and a Pythia model's `config.json`."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path


class HubRefs:
    """The commits of the Hub branches a sweep measures, and what changed since it last
    looked (Pythia's branches have been re-uploaded: EleutherAI/pythia issues 107, 108, 141).

    Offline (`HF_HUB_OFFLINE=1`, or the Hub unreachable) a branch's commit is this sweep's
    record (`<out>/refs/`), else the local Hugging Face cache's `refs/<branch>`, unchecked
    (`unchecked` counts them and the driver says so). Online the Hub's branch list (one
    request per repository) is the truth for every branch: a commit that differs from the
    one recorded or cached is a move, kept in `moved` (`{"repo", "revision", "old", "new",
    "old_from"}`) and in `sweep.json`, and the new commit is measured (its own key); `write`
    records every commit learnt from the Hub under `<out>/refs/`, so that a later offline run
    uses it (a download by commit leaves the cache's `refs/<branch>` where it was).
    """

    def __init__(self, refs_dir: Path, log: Callable[[str], None] = lambda s: None):
        self.refs_dir, self.log = Path(refs_dir), log
        self.checked: dict[str, str] = {}          # repo -> "hub" | "offline" | "unreachable"
        self.moved: list[dict] = []
        self.unchecked: dict[str, int] = {}
        self._branches: dict[str, dict | None] = {}
        self._pending: dict[tuple[str, str], dict] = {}

    def _hub(self, repo: str) -> dict[str, str] | None:
        if repo not in self._branches:
            if _hub_offline():
                self._branches[repo], self.checked[repo] = None, "offline"
            else:
                self._branches[repo] = _hub_branches(repo)
                self.checked[repo] = "hub" if self._branches[repo] is not None else "unreachable"
        return self._branches[repo]

    def resolve(self, repo: str, revisions: list[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """({revision: commit}, {revision: why it does not exist}, {revision: the commit it
        moved from}) for branches of `repo`, without downloading anything."""
        from ...core.models import local_commit
        from .task import recorded_commit

        known, source = {}, {}
        for rev in revisions:
            rec, loc = recorded_commit(self.refs_dir, repo, rev), local_commit(repo, rev)
            if rec or loc:
                known[rev] = rec or loc
                source[rev] = "this sweep's record" if rec else "the local Hugging Face cache"
        branches = self._hub(repo)
        if branches is None:
            n = len(known)
            if n:
                self.unchecked[repo] = self.unchecked.get(repo, 0) + n
                how = "offline" if self.checked[repo] == "offline" else "the Hub did not answer"
                self.log(f"  {repo}: {how}: the commits of {n} branches are those recorded, not checked "
                         "against the Hub")
            return known, {}, {}
        missing, moved_from = {}, {}
        for rev in revisions:
            new = branches.get(rev)
            if new is None:
                if rev not in known:
                    missing[rev] = f"the Hub has no revision {rev}"
                continue  # a branch the Hub dropped: measured as recorded, if it is cached
            old = known.get(rev)
            if old is not None and old != new:
                moved_from[rev] = old
                self.moved.append({"repo": repo, "revision": rev, "old": old, "new": new,
                                   "old_from": source[rev]})
                self.log(f"  {repo} {rev} moved on the Hub: {old[:12]} -> {new[:12]} ({source[rev]} had "
                         f"{old[:12]}); the new commit is measured")
            known[rev] = new
            if recorded_commit(self.refs_dir, repo, rev) != new:
                self._pending[(repo, rev)] = {"repo": repo, "revision": rev, "commit": new,
                                              "moved_from": old if old != new else None}
        return known, missing, moved_from

    def write(self) -> None:
        """Record the commits learnt from the Hub under `<out>/refs/` (with the commit each
        moved from), for later runs (offline ones included)."""
        from ...core.artifacts import atomic_write_text
        from .task import refs_path

        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for (repo, rev), rec in sorted(self._pending.items()):
            atomic_write_text(refs_path(self.refs_dir, repo, rev),
                              json.dumps({**rec, "checked": stamp, "source": "hub"}, sort_keys=True))
        self._pending.clear()

    def record(self) -> dict:
        """What `sweep.json` says about it: `{"checked": {repo: hub|offline|unreachable},
        "moved": [...], "unchecked": {repo: branches}}`."""
        return {"checked": dict(self.checked), "moved": list(self.moved), "unchecked": dict(self.unchecked)}


def _hub_offline() -> bool:
    """True when the driver should not ask the Hub: `HF_HUB_OFFLINE=1`, or its endpoint
    does not accept a connection within 3 s (so an offline machine without the variable
    does not wait for huggingface_hub's retries)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or not _reachable(constants.ENDPOINT)


@functools.lru_cache(maxsize=4)
def _reachable(endpoint: str) -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=3):
            return True
    except OSError:
        return False


def _hub_branches(repo: str) -> dict[str, str] | None:
    """{branch: commit} of a Hub repository (one request), None when it cannot be asked."""
    try:
        from huggingface_hub import HfApi

        refs = HfApi().list_repo_refs(repo)
        return {b.name: b.target_commit for b in refs.branches}
    except Exception:
        return None


def hub_config(repo: str, revision: str) -> dict | None:
    """A Pythia model's config.json without its weights: from the cache, else (online) the
    one small file from the Hub; None when neither works."""
    from ...core.models import cached_config

    cfg = cached_config(repo)
    if cfg is not None or _hub_offline():
        return cfg
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(repo, "config.json", revision=revision)).read_text())
    except Exception:
        return None
