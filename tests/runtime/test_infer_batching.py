"""Micro-batching: concurrent requests share model calls and get their own, unchanged answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from idcscan.runtime.batching import MicroBatcher
from idcscan.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> Predictor:
    return Predictor(tiny_bundle)


@pytest.fixture
def patches() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (24, 50, 50, 3), dtype=np.uint8)


def test_concurrent_requests_are_scored_together_with_unchanged_answers(
    predictor: Predictor, patches: np.ndarray
) -> None:
    batcher = MicroBatcher(predictor, max_batch=16, max_wait_s=0.005)

    async def main() -> list[float]:
        scored = await asyncio.gather(*(batcher.predict(p) for p in patches))
        await batcher.aclose()
        return [s.probability for s in scored]

    got = asyncio.run(main())
    alone = [float(predictor.predict_proba(p[None])[0]) for p in patches]
    np.testing.assert_allclose(got, alone, rtol=0, atol=1e-6)
    assert batcher.stats.items == len(patches)
    assert batcher.stats.largest_batch > 1
    assert batcher.stats.largest_batch <= 16  # max_batch is respected
    assert batcher.stats.batches < len(patches)


def test_a_lone_request_is_not_held_back(predictor: Predictor, patches: np.ndarray) -> None:
    batcher = MicroBatcher(predictor, max_batch=32, max_wait_s=0.002)

    async def main() -> None:
        for p in patches[:3]:
            await batcher.predict(p)
        await batcher.aclose()

    asyncio.run(main())
    assert batcher.stats.batches == 3 and batcher.stats.largest_batch == 1


def test_cam_requests_get_their_map_others_do_not(
    predictor: Predictor, patches: np.ndarray
) -> None:
    batcher = MicroBatcher(predictor, max_batch=8, max_wait_s=0.005)

    async def main():
        calls = (batcher.predict(p, cam=i % 2 == 0) for i, p in enumerate(patches[:6]))
        out = await asyncio.gather(*calls)
        await batcher.aclose()
        return out

    scored = asyncio.run(main())
    probs, cams = predictor.predict_with_cam(patches[:6])
    for i, s in enumerate(scored):
        assert s.probability == pytest.approx(float(probs[i]), abs=1e-6)
        if i % 2 == 0:
            np.testing.assert_allclose(s.cam, cams[i], atol=1e-5)
        else:
            assert s.cam is None


def test_a_failing_call_fails_its_requests_not_the_worker(predictor: Predictor) -> None:
    batcher = MicroBatcher(predictor, max_batch=4)
    wrong = np.zeros((10, 10, 3), dtype=np.uint8)  # not a patch: the predictor refuses it
    good = np.zeros((50, 50, 3), dtype=np.uint8)

    async def main() -> float:
        with pytest.raises(Exception, match="Expected patches"):
            await batcher.predict(wrong)
        result = await batcher.predict(good)
        await batcher.aclose()
        return result.probability

    assert 0.0 < asyncio.run(main()) < 1.0


def test_the_batcher_survives_a_new_event_loop(predictor: Predictor) -> None:
    """Test clients may run each request on a fresh loop; the worker follows the loop."""
    batcher = MicroBatcher(predictor)
    patch = np.full((50, 50, 3), 128, dtype=np.uint8)
    first = asyncio.run(batcher.predict(patch)).probability
    second = asyncio.run(batcher.predict(patch)).probability
    assert first == second
