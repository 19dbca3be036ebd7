use std::time::Duration;

use crm::{Error, NewApiToken, Role, TokenScope};
use sqlx::Row;

use crate::common::{Harness, both};
use crate::registry::owner;
use crate::users::new_user;

const HOUR: i64 = 3_600_000;

async fn sessions_expire_and_log_out(h: &Harness) {
    let user = h
        .crm
        .users()
        .create(new_user(
            "s@example.com",
            Role::Customer,
            Some("long enough secret"),
        ))
        .await
        .unwrap();
    let sessions = h.crm.sessions();
    let (session, token) = sessions
        .create(user.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(token.starts_with("gls_"));
    assert_eq!(session.expires_ms, session.created_ms + HOUR);
    let stored: String = sqlx::query("SELECT token_hash FROM sessions WHERE id = $1")
        .bind(session.id)
        .fetch_one(h.crm.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert!(
        !stored.contains(&token[4..]),
        "the plain token is not stored"
    );

    assert_eq!(
        sessions.lookup(&token).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(sessions.lookup("gls_0000").await.unwrap(), None);
    assert_eq!(
        sessions
            .lookup(&token.replace("gls_", "glk_"))
            .await
            .unwrap(),
        None
    );

    h.clock.advance(HOUR - 1);
    assert!(sessions.lookup(&token).await.unwrap().is_some());
    h.clock.advance(1);
    assert!(
        sessions.lookup(&token).await.unwrap().is_none(),
        "expired at expires_ms"
    );

    let (_, live) = sessions
        .create(user.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(sessions.delete_expired().await.unwrap(), 1);
    assert!(sessions.lookup(&live).await.unwrap().is_some());
    assert!(sessions.delete(&live).await.unwrap(), "logout");
    assert!(sessions.lookup(&live).await.unwrap().is_none());
    assert!(!sessions.delete(&live).await.unwrap());

    // Deactivating the user ends their sessions, for good: reactivation does not bring
    // them back. Changing the password ends them too.
    let (_, kept) = sessions
        .create(user.id, Duration::from_secs(60))
        .await
        .unwrap();
    let users = h.crm.users();
    let deactivate = crm::UserUpdate {
        active: Some(false),
        ..crm::UserUpdate::default()
    };
    users.update(user.id, deactivate).await.unwrap();
    assert!(
        sessions.lookup(&kept).await.unwrap().is_none(),
        "a deactivated user's session must not be accepted"
    );
    let activate = crm::UserUpdate {
        active: Some(true),
        ..crm::UserUpdate::default()
    };
    users.update(user.id, activate).await.unwrap();
    assert!(sessions.lookup(&kept).await.unwrap().is_none());
    let (_, before_change) = sessions
        .create(user.id, Duration::from_secs(60))
        .await
        .unwrap();
    let change = crm::UserUpdate {
        password: Some("another long secret".into()),
        ..crm::UserUpdate::default()
    };
    users.update(user.id, change).await.unwrap();
    assert!(sessions.lookup(&before_change).await.unwrap().is_none());

    let (_, t1) = sessions
        .create(user.id, Duration::from_secs(60))
        .await
        .unwrap();
    let (_, t2) = sessions
        .create(user.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_ne!(t1, t2);
    assert_eq!(sessions.delete_for_user(user.id).await.unwrap(), 2);
    assert!(matches!(
        sessions.create(user.id, Duration::ZERO).await,
        Err(Error::Validation(ref e)) if e[0].field == "ttl"
    ));
    assert!(matches!(
        sessions.create(987_654, Duration::from_secs(1)).await,
        Err(Error::Validation(ref e)) if e[0].field == "user_id"
    ));
}

async fn api_token_lookup_scope_and_revocation(h: &Harness) {
    let (_, _, site_id) = owner(h, "t@example.com").await;
    let tokens = h.crm.api_tokens();
    let write = |site_id| NewApiToken {
        name: "gateway home".into(),
        scope: TokenScope::Write,
        site_id,
        expires_ms: None,
    };
    assert!(matches!(
        tokens.create(write(None)).await,
        Err(Error::Validation(ref e)) if e[0].field == "site_id"
    ));
    let read_with_site = NewApiToken {
        scope: TokenScope::Read,
        ..write(Some(site_id))
    };
    assert!(matches!(
        tokens.create(read_with_site).await,
        Err(Error::Validation(ref e)) if e[0].field == "site_id"
    ));

    let (gateway, token) = tokens.create(write(Some(site_id))).await.unwrap();
    assert!(token.starts_with("glk_") && token.len() == 68, "{token}");
    assert!(
        !serde_json::to_string(&gateway)
            .unwrap()
            .contains(&token[4..])
    );
    let found = tokens.lookup(&token).await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.scope, found.site_id),
        (gateway.id, TokenScope::Write, Some(site_id))
    );
    assert_eq!(tokens.lookup(&format!("{token}0")).await.unwrap(), None);
    assert_eq!(tokens.lookup("Token abc").await.unwrap(), None);

    let (analyst, analyst_token) = tokens
        .create(NewApiToken {
            name: "analyst".into(),
            scope: TokenScope::Read,
            site_id: None,
            expires_ms: Some(crm::Clock::now_ms(&*h.clock) + HOUR),
        })
        .await
        .unwrap();
    assert_eq!(
        tokens.lookup(&analyst_token).await.unwrap().map(|t| t.id),
        Some(analyst.id)
    );
    h.clock.advance(HOUR);
    assert_eq!(
        tokens.lookup(&analyst_token).await.unwrap(),
        None,
        "expired"
    );
    assert!(
        tokens.lookup(&token).await.unwrap().is_some(),
        "no expiry set"
    );

    tokens.revoke(gateway.id).await.unwrap();
    assert_eq!(tokens.lookup(&token).await.unwrap(), None, "revoked");
    assert!(tokens.get(gateway.id).await.unwrap().revoked);
    assert_eq!(
        tokens
            .list(Some(site_id), crm::Page::default())
            .await
            .unwrap()
            .len(),
        1
    );
    tokens.delete(gateway.id).await.unwrap();
    assert!(matches!(
        tokens.revoke(gateway.id).await,
        Err(Error::NotFound { .. })
    ));
}

async fn login_attempts_count_in_window(h: &Harness) {
    let attempts = h.crm.login_attempts();
    let window = Duration::from_secs(600);
    for _ in 0..3 {
        attempts
            .record_failure("Eve@Example.com", "10.0.0.1")
            .await
            .unwrap();
        h.clock.advance(60_000);
    }
    assert_eq!(
        attempts
            .failures("eve@example.com", "10.0.0.1", window)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        attempts
            .failures("eve@example.com", "10.0.0.2", window)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        attempts
            .failures("bob@example.com", "10.0.0.1", window)
            .await
            .unwrap(),
        0
    );
    // The first failure was at T0; at T0 + 10 min it has left the window.
    h.clock.advance(420_000);
    assert_eq!(
        attempts
            .failures("eve@example.com", "10.0.0.1", window)
            .await
            .unwrap(),
        2
    );
    h.clock.advance(600_000);
    assert_eq!(
        attempts
            .failures("eve@example.com", "10.0.0.1", window)
            .await
            .unwrap(),
        0
    );
    assert_eq!(attempts.prune(window).await.unwrap(), 3);

    attempts
        .record_failure("eve@example.com", "10.0.0.1")
        .await
        .unwrap();
    attempts
        .record_failure("eve@example.com", "10.0.0.2")
        .await
        .unwrap();
    attempts.clear("EVE@example.com", "10.0.0.1").await.unwrap();
    assert_eq!(
        attempts
            .failures("eve@example.com", "10.0.0.1", window)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        attempts
            .failures("eve@example.com", "10.0.0.2", window)
            .await
            .unwrap(),
        1
    );
    // Per email over every address, and per address over every email.
    attempts
        .record_failure("mallory@example.com", "10.0.0.2")
        .await
        .unwrap();
    assert_eq!(
        attempts
            .failures_for_email("EVE@example.com", window)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        attempts.failures_from_ip("10.0.0.2", window).await.unwrap(),
        2
    );
    assert_eq!(
        attempts.failures_from_ip("10.0.0.1", window).await.unwrap(),
        0
    );
    h.clock.advance(600_001);
    assert_eq!(
        attempts.failures_from_ip("10.0.0.2", window).await.unwrap(),
        0
    );
}

both!(
    sessions_expire_and_log_out,
    api_token_lookup_scope_and_revocation,
    login_attempts_count_in_window,
);
