"""The image pull policy of create (`ensure_image`), against a fake engine.

The real pulls cannot be tried here (no registry is reachable); what the policy decides —
pull or not, fall back or fail — is pure logic over "is the image local" and "did the pull
work", so a fake engine that records the pulls shows it completely."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from services.executor.errors import OperationFailed
from services.executor.runtime.create import ensure_image


class FakeEngine:
    def __init__(self, local: set[str], pull_works: bool) -> None:
        self.local = local
        self.pull_works = pull_works
        self.pulls: list[str] = []

    async def call(self, fn: Any, ref: str) -> bool:
        assert fn.__name__ == "image_present"
        return ref in self.local

    def new_client(self, timeout: float) -> object:
        return object()

    async def run(self, fn: Any, client: object, repository: str, tag: str) -> None:
        assert fn.__name__ == "pull"
        self.pulls.append(f"{repository}:{tag}")
        if not self.pull_works:
            raise OperationFailed("registry unreachable")
        self.local.add(f"{repository}:{tag}")


def ctx(policy: str, engine: FakeEngine) -> Any:
    config = SimpleNamespace(runtime_image="rt", pull_policy=policy, pull_timeout=5.0)
    return SimpleNamespace(config=config, docker=engine)


@pytest.mark.parametrize(("policy", "tag", "local", "pulled"), [
    ("auto", "v4.1.0", True, False),   # pinned and here: no registry round trip
    ("auto", "v4.1.0", False, True),   # pinned, missing: pulled
    ("auto", "latest", True, True),    # moving tag: always checked
    ("always", "v4.1.0", True, True),
    ("missing", "latest", True, False),
    ("never", "latest", True, False),
])
async def test_policy_decides_whether_to_pull(policy: str, tag: str, local: bool,
                                              pulled: bool) -> None:
    engine = FakeEngine({f"rt:{tag}"} if local else set(), pull_works=True)
    assert await ensure_image(ctx(policy, engine), tag) == f"rt:{tag}"
    assert engine.pulls == ([f"rt:{tag}"] if pulled else [])


async def test_latest_falls_back_to_the_local_image_when_the_pull_fails() -> None:
    engine = FakeEngine({"rt:latest"}, pull_works=False)
    assert await ensure_image(ctx("auto", engine), "latest") == "rt:latest"
    assert engine.pulls == ["rt:latest"]


@pytest.mark.parametrize("policy", ["auto", "never"])
async def test_missing_image_that_cannot_be_had_is_a_clear_error(policy: str) -> None:
    engine = FakeEngine(set(), pull_works=False)
    with pytest.raises(OperationFailed, match=r"rt:v4\.1\.0"):
        await ensure_image(ctx(policy, engine), "v4.1.0")
