//! Redis, locked the way most applications do it: `SET key token NX PX ttl` to acquire,
//! retried every `retry` (1 ms) while the key is taken, and a Lua compare-and-delete to release.
//!
//! Redis has no shared locks. For the readers-writers scenario this backend uses the usual
//! Lua read-write lock (the shape of Redisson's): readers register in a hash when no writer
//! holds the key, a writer takes the key only when there is neither a writer nor a reader.
//! Like every polling read-write lock, it lets a steady stream of readers starve writers; the
//! report shows what that costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use redis::aio::MultiplexedConnection;

use super::{Access, Backend, Conn};
use crate::Scenario;

/// Compare-and-delete: release only our own lock.
const UNLOCK: &str = r#"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"#;

/// Read-write lock, shared acquire. KEYS: writer key, readers hash. ARGV: token, ttl ms.
const RW_READ_LOCK: &str = r#"
if redis.call('exists', KEYS[1]) == 0 then
  redis.call('hset', KEYS[2], ARGV[1], 1)
  redis.call('pexpire', KEYS[2], ARGV[2])
  return 1
end
return 0
"#;

/// Read-write lock, exclusive acquire. KEYS: writer key, readers hash. ARGV: token, ttl ms.
const RW_WRITE_LOCK: &str = r#"
if redis.call('exists', KEYS[1]) == 0 and redis.call('exists', KEYS[2]) == 0 then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Read-write lock, shared release. KEYS: readers hash. ARGV: token.
const RW_READ_UNLOCK: &str = r#"
return redis.call('hdel', KEYS[1], ARGV[1])
"#;

/// The Redis backend.
#[derive(Clone, Debug)]
pub struct RedisBackend {
    client: redis::Client,
    ttl: Duration,
    retry: Duration,
    read_write: bool,
}

impl RedisBackend {
    /// A backend for the Redis at `addr` (`host:port`). Locks expire after `ttl`; a taken
    /// lock is polled every `retry`. With `read_write`, every lock (shared or exclusive) uses
    /// the Lua read-write lock instead of `SET NX PX`.
    pub fn new(addr: &str, ttl: Duration, retry: Duration, read_write: bool) -> Result<Self> {
        Ok(RedisBackend {
            client: redis::Client::open(format!("redis://{addr}/"))?,
            ttl,
            retry,
            read_write,
        })
    }
}

impl Backend for RedisBackend {
    type Conn = RedisConn;

    fn name(&self) -> &'static str {
        "redis"
    }

    fn unsupported(&self, _scenario: Scenario) -> Option<&'static str> {
        None
    }

    async fn connect(&self, id: usize) -> Result<RedisConn> {
        let conn = self.client.get_multiplexed_async_connection().await?;
        Ok(RedisConn {
            conn,
            id,
            next: AtomicU64::new(0),
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            retry: self.retry,
            read_write: self.read_write,
            unlock: redis::Script::new(UNLOCK),
            rw_read: redis::Script::new(RW_READ_LOCK),
            rw_write: redis::Script::new(RW_WRITE_LOCK),
            rw_read_unlock: redis::Script::new(RW_READ_UNLOCK),
        })
    }
}

/// One Redis connection of one benchmark client.
#[derive(Debug)]
pub struct RedisConn {
    conn: MultiplexedConnection,
    id: usize,
    next: AtomicU64,
    ttl_ms: u64,
    retry: Duration,
    read_write: bool,
    unlock: redis::Script,
    rw_read: redis::Script,
    rw_write: redis::Script,
    rw_read_unlock: redis::Script,
}

/// A held Redis lock.
#[derive(Debug)]
pub struct RedisHeld {
    key: String,
    token: String,
    access: Access,
}

fn readers_key(key: &str) -> String {
    format!("{key}:readers")
}

impl RedisConn {
    /// One attempt; `true` when the lock was taken.
    async fn try_once(&self, key: &str, token: &str, access: Access) -> Result<bool> {
        let mut conn = self.conn.clone();
        if !self.read_write {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl_ms)
                .query_async(&mut conn)
                .await?;
            return Ok(set.is_some());
        }
        let script = match access {
            Access::Shared => &self.rw_read,
            Access::Exclusive => &self.rw_write,
        };
        let taken: i64 = script
            .key(key)
            .key(readers_key(key))
            .arg(token)
            .arg(self.ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }
}

impl Conn for RedisConn {
    type Held = RedisHeld;

    async fn acquire(&self, key: &str, access: Access) -> Result<RedisHeld> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}-{n}", self.id);
        while !self.try_once(key, &token, access).await? {
            tokio::time::sleep(self.retry).await;
        }
        Ok(RedisHeld {
            key: key.to_owned(),
            token,
            access,
        })
    }

    async fn release(&self, held: RedisHeld) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = if self.read_write && held.access == Access::Shared {
            self.rw_read_unlock
                .key(readers_key(&held.key))
                .arg(&held.token)
                .invoke_async(&mut conn)
                .await?
        } else {
            self.unlock
                .key(&held.key)
                .arg(&held.token)
                .invoke_async(&mut conn)
                .await?
        };
        Ok(())
    }

    async fn close(self, held: Vec<RedisHeld>) -> Result<()> {
        // Redis has no session: every lock is released on its own.
        for h in held {
            self.release(h).await?;
        }
        Ok(())
    }
}
