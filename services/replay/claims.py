"""Claiming a run before sending it: of two processes that planned the same run at once, one sends.

A claim is written to the claims partition of the replays topic; the claims written since the
plan's snapshot of that topic are read back up to it, and an earlier competing one (same kind,
overlapping range) wins: this claim is released and the run refused, naming the winner
(``runs`` describes the records).
"""

from __future__ import annotations

import asyncio
import os
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.replay import runs
from services.replay.plans import Options, Plan, ReplayRefusedError
from services.replay.runs import Claim, host_name
from services.replay.sending import ABANDON_S
from services.shared import logging as logs
from services.shared.errors import AkeceError
from services.shared.settings import Settings

log = logs.get("replay")


class Claimant:
    """Claims runs of one kind for this process, and releases the claims."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, kind: str, options: Options) -> None:
        self.settings = settings
        self.producer = producer
        self.kind = kind
        self.options = options

    async def claim(self, plan: Plan) -> Claim:
        """Win the right to run ``plan`` or raise ``ReplayRefusedError`` naming the run that was first.

        Writes a claim to the replays topic, then reads every claim written since the plan's run book
        snapshot up to it: one of the same kind over an overlapping range was written first (its
        process planned at the same time and did not see this one either), so this claim is
        released and refused. Idempotent per plan.
        """
        if plan.claim is not None:
            return plan.claim
        claim = Claim(run_id=plan.run_id, kind=self.kind, ranges=plan.ranges, user=self.options.user,
                      host=host_name(), pid=os.getpid(), dead_after_s=self.options.dead_after_s)
        offset = await runs.write_claim(self.producer, self.settings, claim)
        try:
            earlier = [c for _, c in await runs.claims_between(self.settings, plan.claims_from, offset)
                       if claim.competes(c)]
        except BaseException:
            await self.release(claim)
            raise
        if earlier:
            await self.release(claim)
            log.warning(f"{claim.kind}.claim_lost", run_id=plan.run_id, winner=earlier[0].run_id)
            raise ReplayRefusedError(claimed_message(earlier[0], time.time()))
        plan.claim = claim
        return claim

    async def release(self, claim: Claim) -> None:
        """Best effort: an unreleased claim stops counting once its run is recorded or it is stale."""
        try:
            await asyncio.wait_for(runs.release(self.producer, self.settings, claim.id), ABANDON_S)
        except (AkeceError, KafkaError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            log.warning("replay.claim_release_failed", claim=claim.id, error=str(exc)[:200])


def claimed_message(claim: Claim, now: float) -> str:
    return (f"{claim.kind} {claim.run_id} over an overlapping range was started first by {claim.user}@{claim.host} "
            f"pid {claim.pid} ({now - claim.at:.0f}s ago): wait for it to finish")


__all__ = ["Claimant", "claimed_message"]
