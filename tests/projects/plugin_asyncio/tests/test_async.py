import asyncio

import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def queue():
    q = asyncio.Queue()
    await q.put("first")
    yield q
    assert q.empty() or q.qsize() >= 0


@pytest.fixture
def plain_value():
    return 41


@pytest.mark.asyncio
async def test_sleep_and_gather():
    async def twice(x):
        await asyncio.sleep(0.01)
        return 2 * x

    assert await asyncio.gather(twice(1), twice(2)) == [2, 4]


@pytest.mark.asyncio
async def test_async_fixture(queue, plain_value):
    assert await queue.get() == "first"
    assert plain_value + 1 == 42


@pytest.mark.asyncio
async def test_running_loop_is_fresh():
    loop = asyncio.get_running_loop()
    assert not loop.is_closed()
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, "done")
    assert await fut == "done"


@pytest.mark.asyncio
async def test_async_failure():
    await asyncio.sleep(0)
    assert 1 + 1 == 3


async def test_unmarked_coroutine():
    # strict mode: skipped with a warning (not run); auto mode: runs and passes.
    await asyncio.sleep(0)


def test_sync_still_works():
    assert asyncio.run(asyncio.sleep(0, result=7)) == 7
