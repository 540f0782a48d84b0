//! The consumer's Lua scripts, each an atomic step on the Redis side: a batch's effects
//! written with the entries' IDs and acknowledged together, and a consumer leaving its
//! group once it holds nothing.
//!
//! The commit makes processing idempotent by design. An entry's effect is applied only
//! if its ID joins the set of processed IDs in the same script, and the entry is
//! acknowledged there too; so an entry processed a second time (claimed from a replica
//! that was slow rather than dead, or a commit resent after its reply was lost) is
//! acknowledged without a second effect, and no crash can separate an effect from its
//! acknowledgement. The set grows with the stream: trim it together with the stream
//! (`XTRIM`), below the oldest ID that can still be delivered.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::streams::StreamId;
use redis::{RedisResult, Script, ScriptInvocation};

use super::Settings;
use super::calls::is_dropped;

/// `KEYS`: the stream, the set of processed IDs, the effects (a hash of counters by
/// sequence). `ARGV`: the group, then each entry's ID and sequence (empty: no effect).
/// Returns how many effects it applied and how many entries XACK acknowledged.
const COMMIT: &str = r"
local applied = 0
local ids = {}
for i = 2, #ARGV, 2 do
    local id, seq = ARGV[i], ARGV[i + 1]
    if redis.call('SADD', KEYS[2], id) == 1 then
        applied = applied + 1
        if seq ~= '' then
            redis.call('HINCRBY', KEYS[3], seq, 1)
        end
    end
    ids[#ids + 1] = id
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
return {applied, acked}
";

/// `KEYS`: the stream. `ARGV`: the group, the consumer. Deletes the consumer from the
/// group if nothing is pending under its name; returns 1 then, else 0. In one script, so
/// no entry can be delivered to it between the look and the deletion (which would drop
/// that entry from the pending list for good).
const LEAVE: &str = r"
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
    return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
";

static COMMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(COMMIT));
static LEAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LEAVE));

/// An entry whose work is done and whose commit is owed.
#[derive(Clone, Debug)]
pub struct Done {
    pub id: String,
    /// The message's sequence; `None` for an entry without one (no effect to apply).
    pub seq: Option<u64>,
}

impl Done {
    pub fn of(entry: &StreamId) -> Self {
        Done {
            id: entry.id.clone(),
            seq: entry.get::<u64>("seq"),
        }
    }
}

/// What a commit did.
pub struct Committed {
    /// Effects applied now: entries no commit had applied before.
    pub applied: u64,
    /// Entries XACK acknowledged now (a resent commit's were acknowledged already).
    pub acked: u64,
}

/// Applies the effect of every entry of `batch` not applied before, and acknowledges
/// them all, in one script. Safe to resend: a second run applies nothing.
pub async fn commit(
    conn: &ConnectionManager,
    settings: &Settings,
    batch: &[Done],
) -> RedisResult<Committed> {
    let mut invocation = COMMIT_SCRIPT.prepare_invoke();
    invocation
        .key(&settings.stream)
        .key(&settings.processed)
        .key(&settings.effects)
        .arg(&settings.group);
    for done in batch {
        invocation
            .arg(&done.id)
            .arg(done.seq.map(|seq| seq.to_string()).unwrap_or_default());
    }
    let (applied, acked): (u64, u64) = invoke(conn, &invocation).await?;
    Ok(Committed { applied, acked })
}

/// Deletes this consumer from its group if it holds nothing; `false` if it still does.
/// Safe to resend.
pub(super) async fn leave(conn: &ConnectionManager, settings: &Settings) -> RedisResult<bool> {
    let mut invocation = LEAVE_SCRIPT.prepare_invoke();
    invocation
        .key(&settings.stream)
        .arg(&settings.group)
        .arg(&settings.consumer);
    let left: u8 = invoke(conn, &invocation).await?;
    Ok(left == 1)
}

/// Runs a script (loading it first if Redis lacks it: after a restart), and once more
/// if its connection had died, as [`query`](super::calls::query) does. For scripts that
/// are safe to run twice alone.
async fn invoke<T: redis::FromRedisValue>(
    conn: &ConnectionManager,
    invocation: &ScriptInvocation<'_>,
) -> RedisResult<T> {
    match invocation.invoke_async(&mut conn.clone()).await {
        Err(error) if is_dropped(&error) => invocation.invoke_async(&mut conn.clone()).await,
        other => other,
    }
}
