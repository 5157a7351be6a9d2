//! The authority over HTTP, on SQLite and PostgreSQL: the exchange and its rules, the
//! constant delay, the limits, the staff page's sign-in, CSRF, headers and pages, the
//! API-key endpoint, and what is (not) stored.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{claims, csrf_of, iso, text_of_id, today, Backend, Harness, Staff};

const PASSWORD: &str = "a long staff password";

async fn exchange_rules(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let code = h.create_code(today() - 3).await;
    // Typed with the spaces shown on the page.
    let resp = h
        .exchange(serde_json::json!({"authorizationCode": code.grouped(), "fake": "0"}))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: serde_json::Value = resp.json().await.unwrap();
    let c = claims(v["accessToken"].as_str().unwrap());
    assert_eq!(c["scope"], "exposed");
    assert_eq!(c["onset"], iso(today() - 3));
    assert_eq!(c["fake"], "0");
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        30 * 60
    );
    assert_eq!(c["jti"].as_str().unwrap().len(), 32);
    // Single use.
    let again = h
        .exchange(serde_json::json!({"authorizationCode": code.digits(), "fake": "0"}))
        .await;
    assert_eq!(again.status().as_u16(), 404);
    // A wrong code, a malformed one, and a missing fake flag (taken as "0").
    for body in [
        serde_json::json!({"authorizationCode": "000000000000", "fake": "0"}),
        serde_json::json!({"authorizationCode": "12345", "fake": "0"}),
        serde_json::json!({"authorizationCode": "111122223333"}),
    ] {
        assert_eq!(h.exchange(body).await.status().as_u16(), 404);
    }
    // Malformed bodies.
    assert_eq!(
        h.exchange(serde_json::json!({"authorizationCode": "1", "fake": "2"}))
            .await
            .status()
            .as_u16(),
        400
    );
    assert_eq!(
        h.exchange(serde_json::json!([1])).await.status().as_u16(),
        400
    );
    h.finish().await;
}

async fn expired_and_revoked_codes_are_404(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let st = h.state();
    // An expired code, written as it would be stored a day ago.
    let expired = authority::codes::Code::generate(&mut rand::rngs::OsRng);
    let t = common::now();
    assert!(st
        .db
        .insert_code(&st.hasher.hash(&expired), today() - 2, t - 86_400, t - 10)
        .await
        .unwrap());
    let resp = h
        .exchange(serde_json::json!({"authorizationCode": expired.digits(), "fake": "0"}))
        .await;
    assert_eq!(resp.status().as_u16(), 404);
    // A revoked code.
    let code = h.create_code(today()).await;
    assert!(st.revoke_code(&code, "staff:test", t).await.unwrap());
    assert!(
        !st.revoke_code(&code, "staff:test", t).await.unwrap(),
        "revoked twice"
    );
    let resp = h
        .exchange(serde_json::json!({"authorizationCode": code.digits(), "fake": "0"}))
        .await;
    assert_eq!(resp.status().as_u16(), 404);
    h.finish().await;
}

async fn fake_requests_use_no_code_and_look_real(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let code = h.create_code(today() - 1).await;
    // A fake request carrying a live code does not use it.
    let fake = h
        .exchange(serde_json::json!({"authorizationCode": code.digits(), "fake": "1"}))
        .await;
    assert_eq!(fake.status().as_u16(), 200);
    let fake_headers: Vec<String> = {
        let mut v: Vec<String> = fake
            .headers()
            .keys()
            .map(|k| k.to_string())
            .filter(|k| k != "date")
            .collect();
        v.sort();
        v
    };
    let fake_token = fake.json::<serde_json::Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let real = h
        .exchange(serde_json::json!({"authorizationCode": code.digits(), "fake": "0"}))
        .await;
    assert_eq!(
        real.status().as_u16(),
        200,
        "the fake request must not have used the code"
    );
    let mut real_headers: Vec<String> = real
        .headers()
        .keys()
        .map(|k| k.to_string())
        .filter(|k| k != "date")
        .collect();
    real_headers.sort();
    assert_eq!(fake_headers, real_headers);
    let real_token = real.json::<serde_json::Value>().await.unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fake_token.len(), real_token.len());
    let (cf, cr) = (claims(&fake_token), claims(&real_token));
    assert_eq!(cf["fake"], "1");
    assert_eq!(cr["fake"], "0");
    let keys = |c: &serde_json::Value| c.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&cf), keys(&cr));
    h.finish().await;
}

/// Every outcome leaves no earlier than the configured delay after arrival. (Only the
/// lower bound is asserted: an upper bound would depend on the machine's load.)
async fn every_answer_waits_for_the_constant_delay(b: Backend) {
    let h = Harness::start(b, |c| c.onset_delay_ms = 400).await;
    let code = h.create_code(today()).await;
    let bodies = [
        serde_json::json!({"authorizationCode": code.digits(), "fake": "0"}),
        serde_json::json!({"authorizationCode": code.digits(), "fake": "0"}),
        serde_json::json!({"authorizationCode": "000011112222", "fake": "0"}),
        serde_json::json!({"authorizationCode": "x", "fake": "1"}),
        serde_json::json!({"fake": "7"}),
    ];
    let mut statuses = Vec::new();
    for body in bodies {
        let t = Instant::now();
        let s = h.exchange(body).await.status().as_u16();
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "status {s} answered early"
        );
        statuses.push(s);
    }
    assert_eq!(statuses, [200, 404, 404, 200, 400]);
    h.finish().await;
}

async fn one_client_is_limited_per_hour(b: Backend) {
    let h = Harness::start(b, |c| {
        c.client_failures_per_hour = 3;
        c.onset_delay_ms = 0;
    })
    .await;
    let code = h.create_code(today()).await;
    for _ in 0..3 {
        let r = h
            .exchange(serde_json::json!({"authorizationCode": "999999999999", "fake": "0"}))
            .await;
        assert_eq!(r.status().as_u16(), 404);
    }
    // Now even the right code is refused from this address, and it stays live.
    let r = h
        .exchange(serde_json::json!({"authorizationCode": code.digits(), "fake": "0"}))
        .await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "rate_limited"
    );
    // Fake requests are not limited (they guess nothing).
    let r = h
        .exchange(serde_json::json!({"authorizationCode": "", "fake": "1"}))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(h.state().db.count_live(common::now()).await.unwrap(), 1);
    h.finish().await;
}

async fn the_global_budget_stops_guessing(b: Backend) {
    // Risk 1e-11 = a budget of 10 "live codes x guesses": with 4 live codes, two failed
    // guesses fit (4, 8) and a third (12) would not.
    let h = Harness::start(b, |c| {
        c.max_daily_guess_risk = 1e-11;
        c.onset_delay_ms = 0;
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(h.create_code(today()).await);
    }
    for _ in 0..2 {
        let r = h
            .exchange(serde_json::json!({"authorizationCode": "999999999999", "fake": "0"}))
            .await;
        assert_eq!(r.status().as_u16(), 404);
    }
    let r = h
        .exchange(serde_json::json!({"authorizationCode": codes[0].digits(), "fake": "0"}))
        .await;
    assert_eq!(r.status().as_u16(), 429);
    h.finish().await;
}

async fn api_keys_create_codes_in_bulk(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let st = h.state();
    let key = authority::api::new_api_key();
    assert!(st
        .db
        .insert_api_key("lab1", &authority::api::api_key_hash(&key), common::now())
        .await
        .unwrap());
    let post = |auth: Option<String>, body: serde_json::Value| {
        let mut r = h.client.post(format!("{}/v1/authcode", h.url)).json(&body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let onset = serde_json::json!({"onsetDate": iso(today() - 2)});
    assert_eq!(
        post(None, onset.clone()).await.unwrap().status().as_u16(),
        401
    );
    assert_eq!(
        post(Some("Bearer dp3ta_nope".into()), onset.clone())
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let bearer = Some(format!("Bearer {key}"));
    let one: serde_json::Value = post(bearer.clone(), onset.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = one["authorizationCode"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 12);
    let many: serde_json::Value = post(
        bearer.clone(),
        serde_json::json!({"onsetDate": iso(today()), "count": 5}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(many["authorizationCodes"].as_array().unwrap().len(), 5);
    // The onset rules: not in the future, not more than 14 days back.
    for bad in [iso(today() + 1), iso(today() - 15), "2024-13-01".into()] {
        let r = post(bearer.clone(), serde_json::json!({"onsetDate": bad}))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }
    let r = post(
        bearer.clone(),
        serde_json::json!({"onsetDate": iso(today()), "count": 101}),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // The code works once; the audit log counted 6 codes for the lab, this hour.
    let r = h
        .exchange(serde_json::json!({"authorizationCode": code, "fake": "0"}))
        .await;
    assert_eq!(
        claims(
            r.json::<serde_json::Value>().await.unwrap()["accessToken"]
                .as_str()
                .unwrap()
        )["onset"],
        iso(today() - 2)
    );
    let audit = st.db.audit_since(0).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].actor.as_str(),
            audit[0].action.as_str(),
            audit[0].count
        ),
        ("apikey:lab1", "create", 6)
    );
    assert_eq!(audit[0].hour % 3600, 0);
    // A revoked key no longer works.
    assert!(st.db.revoke_api_key("lab1").await.unwrap());
    assert_eq!(post(bearer, onset).await.unwrap().status().as_u16(), 401);
    h.finish().await;
}

async fn staff_sign_in_create_revoke_and_counts(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let secret = h.add_staff("alice", PASSWORD).await;
    let mut s = Staff::new(&h);
    // Signed out: every staff page sends to the sign-in page.
    assert_eq!(s.get("/staff").await, (303, "/staff/login".into()));
    assert_eq!(s.get("/staff/audit").await, (303, "/staff/login".into()));
    s.sign_in("alice", PASSWORD, &secret).await;
    let (st, page) = s.get("/staff").await;
    assert_eq!(st, 200);
    assert!(page.contains("alice"));
    let csrf = csrf_of(&page);
    // Create a code for three days ago; read it from the page.
    let (st, page) = s
        .post(
            "/staff/codes",
            &[("onset", &iso(today() - 3)), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(st, 200, "{page}");
    let shown = text_of_id(&page, "code").unwrap();
    assert_eq!(shown.len(), 14, "{shown}");
    assert_eq!(
        shown.split(' ').map(str::len).collect::<Vec<_>>(),
        [4, 4, 4]
    );
    // An onset in the future or too old is refused, and so is an empty one.
    for bad in [iso(today() + 1), iso(today() - 15), String::new()] {
        let (st, page) = s
            .post("/staff/codes", &[("onset", &bad), ("csrf", &csrf)])
            .await;
        assert_eq!(st, 400, "{bad}");
        assert!(page.contains("class=\"error\""));
    }
    // Create a second code and revoke it.
    let (_, page) = s
        .post("/staff/codes", &[("onset", &iso(today())), ("csrf", &csrf)])
        .await;
    let second = text_of_id(&page, "code").unwrap();
    let (st, page) = s
        .post("/staff/revoke", &[("code", &second), ("csrf", &csrf)])
        .await;
    assert_eq!(st, 200);
    assert!(page.contains("class=\"notice\""));
    let (st, _) = s
        .post("/staff/revoke", &[("code", &second), ("csrf", &csrf)])
        .await;
    assert_eq!(st, 404);
    let r = h
        .exchange(serde_json::json!({"authorizationCode": second, "fake": "0"}))
        .await;
    assert_eq!(r.status().as_u16(), 404);
    // The first works.
    let r = h
        .exchange(serde_json::json!({"authorizationCode": shown, "fake": "0"}))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    // Today's counts.
    let (_, page) = s.get("/staff").await;
    assert_eq!(text_of_id(&page, "count-created").as_deref(), Some("2"));
    assert_eq!(text_of_id(&page, "count-exchanged").as_deref(), Some("1"));
    assert_eq!(text_of_id(&page, "count-revoked").as_deref(), Some("1"));
    assert_eq!(text_of_id(&page, "count-live").as_deref(), Some("0"));
    // The audit page: counts per person and hour.
    let (st, page) = s.get("/staff/audit").await;
    assert_eq!(st, 200);
    assert!(page.contains("staff:alice"));
    let audit = h.state().db.audit_since(0).await.unwrap();
    let by = |action: &str| {
        audit
            .iter()
            .find(|r| r.action == action)
            .map(|r| (r.actor.clone(), r.count))
    };
    assert_eq!(by("create"), Some(("staff:alice".into(), 2)));
    assert_eq!(by("revoke"), Some(("staff:alice".into(), 1)));
    // Sign out ends the session.
    let (st, loc) = s.post("/staff/logout", &[("csrf", &csrf)]).await;
    assert_eq!((st, loc.as_str()), (303, "/staff/login"));
    assert_eq!(s.get("/staff").await, (303, "/staff/login".into()));
    h.finish().await;
}

async fn sign_in_failures_and_totp_replay(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let secret = h.add_staff("bob", PASSWORD).await;
    let mut s = Staff::new(&h);
    let (_, page) = s.get("/staff/login").await;
    let csrf = csrf_of(&page);
    // A wrong password and an unknown name answer alike.
    let (st, _) = s
        .post(
            "/staff/login",
            &[
                ("username", "bob"),
                ("password", "wrong password!"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(st, 401);
    let (_, page) = s.get("/staff/login").await;
    let csrf = csrf_of(&page);
    let (st, _) = s
        .post(
            "/staff/login",
            &[
                ("username", "nobody"),
                ("password", PASSWORD),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(st, 401);
    // The sign-in form needs its token bound to the pre-session cookie.
    let (st, _) = s
        .post(
            "/staff/login",
            &[
                ("username", "bob"),
                ("password", PASSWORD),
                ("csrf", "forged"),
            ],
        )
        .await;
    assert_eq!(st, 403);
    // Password only: the staff page is not reachable yet.
    let (_, page) = s.get("/staff/login").await;
    let csrf = csrf_of(&page);
    let (st, _) = s
        .post(
            "/staff/login",
            &[("username", "bob"), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(st, 303);
    assert_eq!(s.get("/staff").await, (303, "/staff/totp".into()));
    let (_, page) = s.get("/staff/totp").await;
    let csrf = csrf_of(&page);
    let wrong = format!(
        "{:06}",
        (authority::totp::code_at(&secret, common::now())
            .parse::<u32>()
            .unwrap()
            + 1)
            % 1_000_000
    );
    let (st, _) = s
        .post("/staff/totp", &[("totp", &wrong), ("csrf", &csrf)])
        .await;
    assert_eq!(st, 401);
    let code = authority::totp::code_at(&secret, common::now());
    let (st, _) = s
        .post("/staff/totp", &[("totp", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(st, 303);
    // The same one-time password cannot sign in a second browser.
    let mut other = Staff::new(&h);
    let (_, page) = other.get("/staff/login").await;
    let csrf = csrf_of(&page);
    other
        .post(
            "/staff/login",
            &[("username", "bob"), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    let (_, page) = other.get("/staff/totp").await;
    let csrf = csrf_of(&page);
    let (st, _) = other
        .post("/staff/totp", &[("totp", &code), ("csrf", &csrf)])
        .await;
    assert_eq!(st, 401, "a TOTP code is single use");
    // Throttling: the full sign-in cleared bob's failures; since then the replay counted
    // one; four wrong passwords make five, and then even the right one is refused.
    for _ in 0..4 {
        let (_, page) = other.get("/staff/login").await;
        let csrf = csrf_of(&page);
        other
            .post(
                "/staff/login",
                &[
                    ("username", "bob"),
                    ("password", "wrong password!"),
                    ("csrf", &csrf),
                ],
            )
            .await;
    }
    let (_, page) = other.get("/staff/login").await;
    let csrf = csrf_of(&page);
    let (st, _) = other
        .post(
            "/staff/login",
            &[("username", "bob"), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(st, 429);
    // A disabled account cannot sign in, and its sessions end.
    assert!(h.state().db.set_staff_disabled("bob", true).await.unwrap());
    assert_eq!(s.get("/staff").await, (303, "/staff/login".into()));
    h.finish().await;
}

async fn csrf_and_origin_are_checked(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let secret = h.add_staff("carol", PASSWORD).await;
    let mut s = Staff::new(&h);
    s.sign_in("carol", PASSWORD, &secret).await;
    let (_, page) = s.get("/staff").await;
    let csrf = csrf_of(&page);
    let onset = iso(today());
    let (st, _) = s
        .post("/staff/codes", &[("onset", &onset), ("csrf", "0000")])
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_with(
            "/staff/codes",
            &[("onset", &onset), ("csrf", &csrf)],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_with(
            "/staff/codes",
            &[("onset", &onset), ("csrf", &csrf)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(st, 403);
    assert_eq!(
        h.state()
            .db
            .day_counts(common::now())
            .await
            .unwrap()
            .created,
        0
    );
    let origin = h.url.clone();
    let (st, _) = s
        .post_with(
            "/staff/codes",
            &[("onset", &onset), ("csrf", &csrf)],
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(st, 200);
    h.finish().await;
}

async fn pages_carry_the_security_headers_and_speak_german(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    for path in ["/staff/login", "/static/style.css"] {
        let r = h
            .client
            .get(format!("{}{path}", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let hd = r.headers();
        assert_eq!(hd["content-security-policy"], authority::web::CSP);
        assert_eq!(hd["x-frame-options"], "DENY");
        assert_eq!(hd["x-content-type-options"], "nosniff");
        assert_eq!(hd["referrer-policy"], "same-origin");
    }
    let r = h
        .client
        .get(format!("{}/staff/login", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("<script>") && !body.contains("style=\""),
        "no inline code"
    );
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no external assets"
    );
    // German by header, and by choice.
    let r = h
        .client
        .get(format!("{}/staff/login", h.url))
        .header("accept-language", "de-CH,de;q=0.9")
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Anmeldung"));
    let mut s = Staff::new(&h);
    assert_eq!(s.get("/staff/lang/de").await.0, 303);
    let (_, page) = s.get("/staff/login").await;
    assert!(page.contains("lang=\"de\"") && page.contains("Passwort"));
    assert_eq!(s.get("/staff/lang/xx").await.0, 404);
    h.finish().await;
}

/// What a code row holds: only the keyed hash, the onset and coarse times.
async fn nothing_about_the_patient_is_stored(b: Backend) {
    let h = Harness::start(b, |_| {}).await;
    let code = h.create_code(today() - 1).await;
    let st = h.state();
    let (columns, hashes): (Vec<String>, Vec<Vec<u8>>) = match &st.db {
        authority::db::Db::Sqlite(p) => {
            let cols: Vec<(String,)> =
                sqlx::query_as("SELECT name FROM pragma_table_info('codes') ORDER BY cid")
                    .fetch_all(p)
                    .await
                    .unwrap();
            let hashes: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT code_hash FROM codes")
                .fetch_all(p)
                .await
                .unwrap();
            (
                cols.into_iter().map(|c| c.0).collect(),
                hashes.into_iter().map(|h| h.0).collect(),
            )
        }
        authority::db::Db::Postgres(p) => {
            let cols: Vec<(String,)> = sqlx::query_as("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'codes' ORDER BY ordinal_position").fetch_all(p).await.unwrap();
            let hashes: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT code_hash FROM codes")
                .fetch_all(p)
                .await
                .unwrap();
            (
                cols.into_iter().map(|c| c.0).collect(),
                hashes.into_iter().map(|h| h.0).collect(),
            )
        }
    };
    assert_eq!(
        columns,
        [
            "code_hash",
            "onset_day",
            "created_hour",
            "expires_at",
            "state",
            "ended_hour"
        ]
    );
    assert_eq!(hashes, vec![st.hasher.hash(&code).to_vec()]);
    assert!(!hashes[0].windows(12).any(|w| w == code.digits().as_bytes()));
    h.finish().await;
}

on_both_databases!(
    exchange_rules,
    expired_and_revoked_codes_are_404,
    fake_requests_use_no_code_and_look_real,
    every_answer_waits_for_the_constant_delay,
    one_client_is_limited_per_hour,
    the_global_budget_stops_guessing,
    api_keys_create_codes_in_bulk,
    staff_sign_in_create_revoke_and_counts,
    sign_in_failures_and_totp_replay,
    csrf_and_origin_are_checked,
    pages_carry_the_security_headers_and_speak_german,
    nothing_about_the_patient_is_stored,
);
