//! An expensive query: one session holds thousands of locks with the longest names allowed,
//! and another connection asks for that session's locks again and again, from deep cursors.
//! Every answer is one page within the frame limit (`more` set while locks follow, the
//! cursor walks the whole list once), and a well-behaved client with a short lease holds its
//! lock through all of it: no query holds the core task long enough to let a lease lapse.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dlock_client::Client;
use dlock_proto::{LockId, Query, Reply, Request, ServerMessage, SessionId, SessionInfo};
use dlock_tests::RawClient;
use dlock_tests::hostile::Bystander;

use crate::{one_at_a_time, sized, take_all, took};

/// Locks the target session holds: 5,000, or 100,000 at full size.
fn locks() -> usize {
    sized(5_000, 100_000)
}

/// Length of each lock's resource name: the engine's default maximum.
const NAME_LEN: usize = 1024;

/// Session queries the attacker sends at once, each from a cursor deeper in the list.
const QUERIES: usize = 50;

/// The well-behaved client's lease: short (above the server's minimum, 100 ms); 2 s at full
/// size, as `dlock acquire --ttl 2s` was when one such query flood cost it its lock.
fn short_lease() -> Duration {
    Duration::from_millis(sized(1_000, 2_000) as u64)
}

fn name(i: usize) -> String {
    let mut n = format!("h2/{i:06}/");
    n.extend(std::iter::repeat_n('x', NAME_LEN - n.len()));
    n
}

/// Checks that `reply` is one page of `target`'s locks that continues `ids` after position
/// `from` (the first `from` locks were on earlier pages), and that it fits in a frame.
/// Returns the page's locks and whether more follow.
fn check_page(
    reply: Reply,
    target: SessionId,
    ids: &[LockId],
    from: usize,
    max_frame_len: usize,
) -> Result<(usize, bool)> {
    let encoded = dlock_proto::codec::encode_body(&ServerMessage::Reply {
        id: dlock_proto::RequestId(1),
        body: reply.clone(),
    })?;
    ensure!(
        encoded.len() <= max_frame_len,
        "a page of {} bytes exceeds the frame limit of {max_frame_len}",
        encoded.len()
    );
    let (info, more): (SessionInfo, bool) = match reply {
        Reply::Session {
            session: Some(info),
            more,
            ..
        } => (info, more),
        other => bail!("expected a page of the session, got {other:?}"),
    };
    ensure!(info.session == target, "page of {:?}", info.session);
    ensure!(!info.locks.is_empty(), "an empty page from position {from}");
    let got: Vec<LockId> = info.locks.iter().map(|l| l.lock).collect();
    let want = &ids[from..(from + got.len()).min(ids.len())];
    ensure!(
        got == want,
        "the page from position {from} does not continue the list: {:?}..",
        &got[..got.len().min(3)]
    );
    ensure!(
        more == (from + got.len() < ids.len()),
        "`more` is {more} after position {}",
        from + got.len()
    );
    Ok((got.len(), more))
}

fn session_query(session: SessionId, after: Option<LockId>) -> Request {
    Request::Query(Query::Session { session, after })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_queries_over_thousands_of_long_names_come_in_pages() -> Result<()> {
    let _turn = one_at_a_time().await;
    let start = Instant::now();
    let server = crate::unrated_server().await?;
    let addr = server.addr();
    let bystander = Bystander::start_with(
        Client::builder(addr.to_string()).lease_ttl(short_lease()),
        "h2",
    )
    .await?;

    let mut holder = RawClient::connect(addr, "h2-holder").await?;
    let locks = locks();
    let names: Vec<String> = (0..locks).map(name).collect();
    let ((ids, pages), cycles) = bystander
        .alongside(async {
            let ids = take_all(&mut holder, &names).await?;
            let mut attacker = RawClient::connect(addr, "h2-attacker").await?;
            let max_frame_len = attacker.welcome.max_frame_len as usize;
            // The flood: QUERIES session queries in one burst, each from its own cursor, the
            // deepest near the end of the list (skipping to it walks the list).
            let step = (locks - 200) / QUERIES;
            let mut sent = Vec::with_capacity(QUERIES);
            for q in 0..QUERIES {
                let from = q * step;
                let after = from.checked_sub(1).map(|i| ids[i]);
                let id = attacker.send(session_query(holder.session, after)).await?;
                sent.push((id, from));
            }
            for (id, from) in sent {
                let reply = attacker.reply_for(id).await?;
                let (n, more) = check_page(reply, holder.session, &ids, from, max_frame_len)?;
                ensure!(more && n < locks / 10, "page of {n} locks, more: {more}");
            }
            // The cursor walks the whole list, one page per query.
            let (mut from, mut pages) = (0usize, 0usize);
            loop {
                let after = from.checked_sub(1).map(|i| ids[i]);
                let id = attacker.send(session_query(holder.session, after)).await?;
                let reply = attacker.reply_for(id).await?;
                let (n, more) = check_page(reply, holder.session, &ids, from, max_frame_len)?;
                from += n;
                pages += 1;
                if !more {
                    break;
                }
                ensure!(pages < locks, "the cursor does not advance");
            }
            ensure!(from == locks, "the walk saw {from} of {locks} locks");
            Ok((ids, pages))
        })
        .await?;
    ensure!(ids.len() == locks);

    bystander.cycles(3).await?;
    bystander
        .check_held()
        .await
        .context("the short-lease session")?;
    eprintln!(
        "h2 expensive query: {locks} locks x {NAME_LEN} B names; {QUERIES} deep session queries and a walk of {pages} pages ({} locks per page), each within the frame limit; bystander with a {:?} lease: {cycles} cycles during the fill and the queries ({}), lock kept",
        locks.div_ceil(pages),
        short_lease(),
        bystander.times()
    );
    took("h2", start);
    Ok(())
}
