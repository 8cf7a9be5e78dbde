"""Batches send to IBKR in the order they took their ids, whatever order they finish recording in."""

from __future__ import annotations

import asyncio

from workers.service_layer.orders.placing import SendingTurn


async def test_each_batch_sends_after_the_ones_ahead_even_when_they_give_up() -> None:
    first = SendingTurn(None)
    second = SendingTurn(first.finished)
    third = SendingTurn(second.finished)
    sent: list[str] = []

    async def batch(name: str, turn: SendingTurn, recording: float, fails: bool = False) -> None:
        try:
            await asyncio.sleep(recording)  # the recording statement
            if fails:
                raise RuntimeError("the ledger is away")
            await turn.wait()
            sent.append(name)
        finally:
            turn.done()

    results = await asyncio.gather(batch("third", third, 0.0), batch("second", second, 0.01, fails=True),
                                   batch("first", first, 0.03), return_exceptions=True)

    assert sent == ["first", "third"]
    assert isinstance(results[1], RuntimeError)
    assert first.finished.done() and second.finished.done() and third.finished.done()


async def test_a_turn_given_up_early_does_not_let_the_next_pass_the_ones_ahead() -> None:
    first = SendingTurn(None)
    second = SendingTurn(first.finished)
    second.done()  # gave up before its turn came

    assert not second.finished.done()  # the first is still sending
    first.done()
    await asyncio.sleep(0)
    assert second.finished.done()
