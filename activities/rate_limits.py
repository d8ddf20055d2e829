"""Requests- and tokens-per-minute quotas shared by every worker, decided atomically in Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Mapping

from pydantic_core import to_jsonable_python
from redis.asyncio import Redis
from redis.exceptions import RedisError

from longtask.policies import ModelQuota

logger = logging.getLogger(__name__)

# The JSON around the messages or inputs that the openai client adds: model name (up to ~90
# characters), "stream", "stream_options", "max_tokens", "encoding_format". Counting it generously
# costs ~50 tokens a call; counting it short would make the provider refuse calls we let go.
_ENVELOPE_BYTES = 192

# A waiting call re-asks at least this often, so a call that died while waiting stops holding
# other tasks back within _MAX_WAIT_SECONDS + _WAIT_GRACE_SECONDS.
_MAX_WAIT_SECONDS = 2.0
_WAIT_GRACE_SECONDS = 2.0
# Calls reach the provider a little after they are let go, and not all equally late, so its
# bucket can be a fraction of a call lower than ours. Keeping this much refill in reserve absorbs
# that: it lowers the first burst by rpm/120 requests (tpm/120 tokens), not the steady rate.
_RESERVE_SECONDS = 0.5
# After a minute without calls every bucket is full again, so idle keys can go without loss.
_IDLE_TTL_MS = 120_000

# KEYS: 1 buckets (hash), 2 waiting calls (zset member "ticket:tokens:task" -> deadline),
#       3 served (zset task -> quota used, in minutes of quota).
# ARGV: rpm (0 = none), tpm (0 = none), tokens, task, member, max wait, grace, idle ttl ms,
#       reserve seconds.
# Returns 0 when the call may go, else the milliseconds to wait before asking again.
#
# Fairness is start-time fair queuing over tasks: each task's score is the share of the quota
# it has used (max of requests/rpm and tokens/tpm, so whichever limit binds is what is shared).
# A call may take capacity only if what is left covers the waiting calls of less-served tasks
# first; capacity beyond that goes to anyone, so an idle task's share is never held back. A task
# that starts waiting is lifted to the virtual time (the least score among waiting tasks at the
# last grant), so idle time earns no credit and a newcomer cannot lock out the others.
_DECIDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local task, member = ARGV[4], ARGV[5]
local max_wait, grace, reserve = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[9])

local state = redis.call('HMGET', KEYS[1], 'requests', 'tokens', 'updated', 'vtime')
local elapsed = math.max(0, now - (tonumber(state[3]) or now))
local function refill(level, limit)
  if limit == 0 then return 0 end
  local known = tonumber(level)
  if known == nil then return limit end
  return math.min(limit, known + elapsed * limit / 60)
end
local req, tok = refill(state[1], rpm), refill(state[2], tpm)
local vtime = tonumber(state[4]) or 0
-- A call larger than the whole minute's budget could never pass; it goes when the bucket is full.
local function need_of(n) if tpm == 0 then return 0 end return math.min(n, tpm) end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local scores, waiters, already = {}, {}, false
local function score_of(name)
  if scores[name] == nil then
    scores[name] = tonumber(redis.call('ZSCORE', KEYS[3], name)) or vtime
  end
  return scores[name]
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local n, name = string.match(m, '^[^:]*:(%d+):(.*)$')
  if name == task then already = true
  elseif name then waiters[#waiters + 1] = {name, tonumber(n)} end
end
local mine = tonumber(redis.call('ZSCORE', KEYS[3], task)) or vtime
if not already then mine = math.max(mine, vtime) end

local ahead_req, ahead_tok, least = 0, 0, mine
for _, w in ipairs(waiters) do
  local s = score_of(w[1])
  least = math.min(least, s)
  if s < mine then
    ahead_req = ahead_req + 1
    ahead_tok = ahead_tok + need_of(w[2])
  end
end
local need = need_of(tokens)
local wait = 0
if rpm > 0 then wait = math.max(wait, (ahead_req + 1 - req) * 60 / rpm + reserve) end
if tpm > 0 then wait = math.max(wait, (ahead_tok + need - tok) * 60 / tpm + reserve) end

if wait <= 0 then
  if rpm > 0 then req = req - 1 end
  if tpm > 0 then tok = tok - need end
  local cost = 0
  if rpm > 0 then cost = 1 / rpm end
  if tpm > 0 then cost = math.max(cost, need / tpm) end
  vtime = math.max(vtime, least)
  redis.call('ZADD', KEYS[3], mine + cost, task)
  redis.call('ZREM', KEYS[2], member)
  -- Scores below the virtual time carry nothing: a returning task is lifted to it anyway.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%.17g', vtime))
else
  wait = math.min(math.max(wait, 0.01), max_wait)
  redis.call('ZADD', KEYS[2], string.format('%.6f', now + wait + grace), member)
  redis.call('ZADD', KEYS[3], string.format('%.17g', mine), task)
end
redis.call('HSET', KEYS[1], 'requests', string.format('%.6f', req),
  'tokens', string.format('%.6f', tok), 'updated', string.format('%.6f', now),
  'vtime', string.format('%.17g', vtime))
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[8]) end
if wait <= 0 then return 0 end
return math.ceil(wait * 1000)
"""


class SharedRateLimiter:
    """Paces calls so that all workers together stay within each model's quota."""

    def __init__(
        self,
        redis: Redis,
        quotas: Mapping[str, ModelQuota],
        key_prefix: str = "ltm:ratelimit",
        *,
        redis_timeout: float = 2.0,
    ) -> None:
        self._quotas = dict(quotas)
        self._prefix = key_prefix
        self._redis_timeout = redis_timeout
        self._script = redis.register_script(_DECIDE)
        self._redis_down = False

    def keys(self, model: str) -> list[str]:
        # The braces keep a model's keys in one Redis Cluster slot, as a script needs.
        base = f"{self._prefix}:{{{model}}}"
        return [f"{base}:buckets", f"{base}:waiting", f"{base}:served"]

    async def acquire(self, model: str, task_id: str, tokens: int) -> float:
        """Wait until ``model`` may take one request of ``tokens`` tokens for ``task_id``.

        Returns:
            The seconds waited.
        """
        quota = self._quotas.get(model)
        if quota is None or (quota.rpm is None and quota.tpm is None):
            return 0.0
        started = time.monotonic()
        member = f"{uuid.uuid4().hex}:{max(0, tokens)}:{task_id}"
        args: list[str | int | float] = [quota.rpm or 0, quota.tpm or 0, max(0, tokens)]
        args += [task_id, member, _MAX_WAIT_SECONDS, _WAIT_GRACE_SECONDS, _IDLE_TTL_MS]
        args.append(_RESERVE_SECONDS)
        while True:
            wait_ms = await self._decide(self.keys(model), args)
            if not wait_ms:  # 0: go; None: Redis unreachable, go unpaced
                return time.monotonic() - started
            # Jitter spreads waiters that were told the same time, so they do not ask at once.
            wait = wait_ms / 1000
            await asyncio.sleep(wait + random.uniform(0, 0.05 * wait + 0.005))

    async def _decide(self, keys: list[str], args: list[str | int | float]) -> int | None:
        """The script's answer in milliseconds to wait, or None when Redis cannot answer."""
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        answer: int | None = None
        failure: Exception | None = None
        try:
            async with asyncio.timeout(self._redis_timeout):
                answer = int(await self._script(keys=keys, args=args))
        except (RedisError, OSError, TimeoutError) as error:
            failure = error
        # redis-py can swallow a cancel that lands mid-command and return an answer or an error
        # instead (seen with redis-py 8.1 in about 1 cancel in 10; an old class of bug, e.g.
        # redis/redis-py#2028). Re-raise it, or a cancelled activity, or one whose own timeout
        # ran out, would keep going.
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError
        if failure is not None:
            # Without Redis the call goes unpaced rather than hanging the task: the provider's
            # own 429 answers, retried by Temporal, still keep it within the quota.
            if not self._redis_down:
                logger.warning("rate limits not enforced, Redis unreachable: %r", failure)
            self._redis_down = True
            return None
        self._redis_down = False
        return answer


def estimate_request_tokens(messages_or_inputs: object, max_tokens: int | None = None) -> int:
    """What the provider charges a call against its tokens-per-minute quota.

    It mirrors the local LLM server's charge, the request body's size in bytes // 4 plus the
    requested output budget, for the compact UTF-8 JSON the openai client sends.

    Args:
        messages_or_inputs: a chat call's messages, or an embedding call's input(s).
        max_tokens: the output budget the call asks for, if any.
    """
    body = json.dumps(
        messages_or_inputs,
        ensure_ascii=False,
        separators=(",", ":"),
        default=to_jsonable_python,
    ).encode()
    return (len(body) + _ENVELOPE_BYTES) // 4 + (max_tokens or 0)
