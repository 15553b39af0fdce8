//! The JSON API: resources with their queues (paged by cursor), sessions with their lease
//! left, the wait-for graph with the deadlock cycle the server broke, the status summary;
//! bad parameters are a 400 and harm nothing; every error answer says why in its body;
//! `/api/cluster` of a server that runs alone is a 404 saying so; a request for a host other
//! than an IP address, `localhost` or a name of `--http-allowed-host` is a 421 (DNS
//! rebinding), but for the probes and `/metrics`.

use anyhow::{Context, Result, ensure};
use dlock_proto::status::{ResourcesView, ServerStatus, SessionsView, WaitsView};
use dlock_tests::TestServer;
use dlock_tests::http::{get, get_json, request};

use crate::scenario::{HOSTILE_NAME, build};

#[tokio::test]
async fn t82_api_shows_queues_sessions_waits_and_the_broken_cycle() -> Result<()> {
    let server = TestServer::start_with_http(TestServer::config()).await?;
    let http = server.http_addr().context("no http")?;
    let scene = build(&server).await?;
    let ids = |c: &dlock_tests::RawClient| c.session.0;

    let v: ResourcesView = get_json(http, "/api/resources?prefix=app/").await?;
    ensure!(v.resources.len() == 1 && v.next_cursor.is_none(), "{v:?}");
    let r = &v.resources[0];
    ensure!(r.name == "app/db");
    let holders: Vec<(&str, Option<&str>)> = r
        .holders
        .iter()
        .map(|l| (l.session_name.as_str(), l.mode.as_deref()))
        .collect();
    ensure!(
        holders == [("reader-1", Some("PR")), (HOSTILE_NAME, Some("PR"))],
        "{holders:?}"
    );
    ensure!(
        r.holders
            .iter()
            .all(|l| l.token.is_some() && l.for_ms <= v.now_ms)
    );
    ensure!(r.waiting.len() == 1 && r.converting.is_empty());
    let w = &r.waiting[0];
    ensure!(
        w.session_name == "writer"
            && w.requested_mode.as_deref() == Some("EX")
            && w.token.is_none()
    );

    // Pages of one resource, by cursor, cover every resource once, in name order.
    let mut names = Vec::new();
    let mut path = "/api/resources?limit=1".to_owned();
    loop {
        let page: ResourcesView = get_json(http, &path).await?;
        ensure!(page.resources.len() == 1, "{page:?}");
        names.push(page.resources[0].name.clone());
        match page.next_cursor {
            Some(c) => path = format!("/api/resources?limit=1&cursor={c}"),
            None => break,
        }
    }
    ensure!(names == ["app/db", "cycle/x", "cycle/y"], "{names:?}");

    let s: SessionsView = get_json(http, "/api/sessions").await?;
    ensure!(s.sessions.len() == 5 && s.next_cursor.is_none());
    let hostile = s
        .sessions
        .iter()
        .find(|x| x.session == ids(&scene.reader2))
        .context("reader-2 listed")?;
    ensure!(hostile.name == HOSTILE_NAME && hostile.locks == 1 && hostile.pending == 0);
    ensure!(
        s.sessions
            .iter()
            .all(|x| x.lease_remaining_ms <= x.ttl_ms && x.lease_remaining_ms > 0)
    );
    let page: SessionsView = get_json(http, "/api/sessions?limit=2").await?;
    let next = page.next_cursor.context("a second page")?;
    let rest: SessionsView = get_json(http, &format!("/api/sessions?cursor={next}")).await?;
    ensure!(page.sessions.len() + rest.sessions.len() == 5);

    let g: WaitsView = get_json(http, "/api/waits").await?;
    let edges: Vec<(u64, u64)> = g.edges.iter().map(|e| (e.waiter, e.holder)).collect();
    let mut want = vec![
        (ids(&scene.writer), ids(&scene.reader1)),
        (ids(&scene.writer), ids(&scene.reader2)),
        (ids(&scene.left), ids(&scene.right)),
    ];
    want.sort();
    ensure!(edges == want, "edges {edges:?}, expected {want:?}");
    ensure!(!g.truncated);
    ensure!(g.cycles.len() == 1, "{:?}", g.cycles);
    let c = &g.cycles[0];
    ensure!(c.victim == ids(&scene.right));
    ensure!(c.sessions == [ids(&scene.right), ids(&scene.left)], "{c:?}");
    ensure!(c.resource.as_deref() == Some("cycle/x") && c.mode.as_deref() == Some("EX"));
    ensure!(g.names.get(&ids(&scene.left)).map(String::as_str) == Some("left"));
    ensure!(g.names.get(&ids(&scene.reader2)).map(String::as_str) == Some(HOSTILE_NAME));

    let st: ServerStatus = get_json(http, "/api/status").await?;
    ensure!(st.ready && st.grace_remaining_ms.is_none());
    ensure!(
        (st.sessions, st.resources, st.connections) == (5, 3, 5),
        "{st:?}"
    );
    ensure!(st.granted.get("PR") == Some(&2) && st.granted.get("EX") == Some(&2));
    ensure!(st.waiting.get("EX") == Some(&2) && st.converting.is_empty());

    // Bad parameters: a 400, and the server keeps serving.
    for bad in [
        "/api/resources?limit=many",
        "/api/sessions?cursor=-1",
        "/api/sessions?limit=1e9",
        "/api/resources?limit=0",
        "/api/sessions?limit=0",
    ] {
        let a = get(http, bad).await?;
        ensure!(a.status == 400, "{bad}: {} {}", a.status, a.body);
    }
    ensure!(get(http, "/nowhere").await?.status == 404);
    let again: ServerStatus = get_json(http, "/api/status").await?;
    ensure!(again.sessions == 5);

    // The readers leave: the writer is granted, and the API says so.
    let mut scene = scene;
    scene.reader1.release(scene.reader_locks.0).await?;
    scene.reader2.release(scene.reader_locks.1).await?;
    let g = scene.writer.event_for(scene.writer_request).await?;
    ensure!(
        matches!(g.kind, dlock_proto::EventKind::Granted { .. }),
        "{g:?}"
    );
    let v: ResourcesView = get_json(http, "/api/resources?prefix=app/").await?;
    let r = &v.resources[0];
    ensure!(r.waiting.is_empty() && r.holders.len() == 1);
    ensure!(r.holders[0].session_name == "writer" && r.holders[0].mode.as_deref() == Some("EX"));
    Ok(())
}

#[tokio::test]
async fn t82_pages_by_cursor_hex_go_on_past_names_that_are_not_utf8() -> Result<()> {
    use dlock_client::{Client, Mode};
    let server = TestServer::start_with_http(TestServer::config()).await?;
    let http = server.http_addr().context("no http")?;
    let c = Client::connect(server.addr().to_string()).await?;
    let all: [&[u8]; 4] = [b"a", b"b\xff", b"b\xff\0c", b"c"];
    let mut held = Vec::new();
    for name in all {
        held.push(c.lock(name, Mode::NL).await?);
    }
    // One resource a page, by next_cursor_hex, with a bound in case a cursor does not move.
    let mut names = Vec::new();
    let mut path = "/api/resources?limit=1".to_owned();
    for _ in 0..=all.len() {
        let page: ResourcesView = get_json(http, &path).await?;
        ensure!(page.resources.len() == 1, "{page:?}");
        let r = &page.resources[0];
        names.push(match &r.name_hex {
            Some(hex) => dlock_proto::from_hex(hex).context("name_hex")?,
            None => r.name.clone().into_bytes(),
        });
        ensure!(page.next_cursor.is_some() == page.next_cursor_hex.is_some());
        match page.next_cursor_hex {
            Some(hex) => path = format!("/api/resources?limit=1&cursor_hex={hex}"),
            None => break,
        }
    }
    ensure!(names == all, "{names:?}");
    drop(held);
    Ok(())
}

#[tokio::test]
async fn t82_every_error_answer_says_why() -> Result<()> {
    let server = TestServer::start_with_http(TestServer::config()).await?;
    let http = server.http_addr().context("no http")?;
    // (method, path, status, a word of the body)
    let cases = [
        (
            "GET",
            "/api/resources?limit=0",
            400,
            "limit must be at least 1",
        ),
        (
            "GET",
            "/api/sessions?limit=0",
            400,
            "limit must be at least 1",
        ),
        (
            "GET",
            "/api/resources?limit=many",
            400,
            "bad query parameter: limit: invalid digit",
        ),
        (
            "GET",
            "/api/sessions?cursor=-1",
            400,
            "bad query parameter: cursor",
        ),
        ("GET", "/api/resources?cursor_hex=zz", 400, "cursor_hex"),
        (
            "GET",
            "/api/resources?cursor=a&cursor_hex=61",
            400,
            "not both",
        ),
        ("GET", "/nowhere", 404, "no such path: /nowhere"),
        (
            "POST",
            "/api/status",
            405,
            "POST is not allowed on /api/status",
        ),
    ];
    for (method, path, status, says) in cases {
        let a = request(http, method, path, &[]).await?;
        ensure!(
            a.status == status,
            "{method} {path}: {} {:?}",
            a.status,
            a.body
        );
        ensure!(
            a.body.contains(says) && a.body.ends_with('\n') && a.body.lines().count() == 1,
            "{method} {path}: body {:?}, expected one line saying {says:?}",
            a.body
        );
    }
    Ok(())
}

/// A conversion refused as a deadlock (R20: two PR holders converting to EX) is recorded with
/// its resource, its mode and the session it would have waited for, as a new request is.
#[tokio::test]
async fn t82_a_conversion_deadlock_is_recorded_with_its_cycle() -> Result<()> {
    use dlock_proto::{EventKind, LockFlags, Mode};
    let server = TestServer::start_with_http(TestServer::config()).await?;
    let http = server.http_addr().context("no http")?;
    let mut a = dlock_tests::RawClient::connect(server.addr(), "conv-a").await?;
    let mut b = dlock_tests::RawClient::connect(server.addr(), "conv-b").await?;
    let (la, _) = a.acquire("conv/x", Mode::PR).await?;
    let (lb, _) = b.acquire("conv/x", Mode::PR).await?;
    let r = a.convert(la, Mode::EX, LockFlags::empty()).await?;
    let q = a.event_for(r).await?;
    ensure!(matches!(q.kind, EventKind::Queued), "a: {q:?}");
    let r = b.convert(lb, Mode::EX, LockFlags::empty()).await?;
    let d = b.event_for(r).await?;
    ensure!(matches!(d.kind, EventKind::Deadlock), "b: {d:?}");

    let g: WaitsView = get_json(http, "/api/waits").await?;
    ensure!(g.cycles.len() == 1, "{:?}", g.cycles);
    let c = &g.cycles[0];
    ensure!(c.victim == b.session.0, "{c:?}");
    ensure!(c.sessions == [b.session.0, a.session.0], "{c:?}");
    ensure!(
        c.resource.as_deref() == Some("conv/x") && c.mode.as_deref() == Some("EX"),
        "{c:?}"
    );
    Ok(())
}

#[tokio::test]
async fn t82_the_cluster_of_a_server_alone_is_a_404_saying_so() -> Result<()> {
    let server = TestServer::start_with_http(TestServer::config()).await?;
    let http = server.http_addr().context("no http")?;
    for (method, path) in [("GET", "/api/cluster"), ("DELETE", "/api/cluster?id=3")] {
        let a = request(http, method, path, &[]).await?;
        ensure!(
            a.status == 404
                && a.body == "not a cluster: this server runs alone (started without --peers)\n",
            "{method} {path}: {} {:?}",
            a.status,
            a.body
        );
    }
    // As /api/status says: no Raft role.
    let st: ServerStatus = get_json(http, "/api/status").await?;
    ensure!(st.role.is_none(), "{st:?}");
    Ok(())
}

/// A page reached through DNS rebinding sends its own name as the `Host`: refused with a 421
/// naming the option that allows a name, reads and membership changes alike, with a token
/// or without; IP addresses, `localhost` and the allowed names are answered, and the probes
/// and `/metrics` answer for any name.
#[tokio::test]
async fn t82_a_host_other_than_an_address_localhost_or_an_allowed_name_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let auth = dlock_tests::security::write_auth_file(dir.path(), &[("ops", "to")])?;
    for token in [None, Some("Bearer to")] {
        let server = TestServer::start_with_http(dlock_server::Config {
            http_allowed_hosts: vec!["dlock.internal".to_owned()],
            auth_file: token.map(|_| auth.clone()),
            ..TestServer::config()
        })
        .await?;
        let http = server.http_addr().context("no http")?;
        let port = http.port();
        let with = |host: &str| {
            let mut h = vec![("Host", host.to_owned())];
            h.extend(token.map(|t| ("Authorization", t.to_owned())));
            h
        };
        let ask = |method: &'static str, path: &'static str, host: String| async move {
            let headers = with(&host);
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(http, method, path, &headers).await
        };
        let rebound = format!("rebind.attacker.example:{port}");
        for (method, path) in [
            ("GET", "/api/status"),
            ("GET", "/api/resources"),
            ("GET", "/"),
            ("DELETE", "/api/cluster?id=3"),
            ("POST", "/api/cluster"),
        ] {
            let a = ask(method, path, rebound.clone()).await?;
            ensure!(
                a.status == 421
                    && a.body.contains("rebind.attacker.example")
                    && a.body.contains("--http-allowed-host NAME")
                    && a.body.lines().count() == 1,
                "{method} {path} for {rebound} ({token:?}): {} {:?}",
                a.status,
                a.body
            );
        }
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            format!("dlock.internal:{port}"),
        ] {
            let a = ask("GET", "/api/status", host.clone()).await?;
            ensure!(
                a.status == 200,
                "{host} ({token:?}): {} {:?}",
                a.status,
                a.body
            );
            // The membership change reaches its handler: a server that runs alone.
            let a = ask("DELETE", "/api/cluster?id=3", host.clone()).await?;
            ensure!(
                a.status == 404 && a.body.starts_with("not a cluster"),
                "{host} ({token:?}): {} {:?}",
                a.status,
                a.body
            );
        }
        for path in ["/healthz", "/readyz", "/metrics"] {
            let a = ask("GET", path, rebound.clone()).await?;
            ensure!(
                a.status == 200,
                "{path} for {rebound}: {} {:?}",
                a.status,
                a.body
            );
        }
    }
    Ok(())
}
