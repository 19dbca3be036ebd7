use crm::{Error, NewUser, Page, Role, UserFilter, UserUpdate};
use sqlx::Row;

use crate::common::{Harness, both};

pub(crate) fn new_user(email: &str, role: Role, password: Option<&str>) -> NewUser {
    NewUser {
        email: email.into(),
        display_name: "Test User".into(),
        role,
        password: password.map(Into::into),
    }
}

async fn email_lower_cased_and_unique(h: &Harness) {
    let users = h.crm.users();
    let alice = users
        .create(new_user("  Alice@Example.COM ", Role::Customer, None))
        .await
        .unwrap();
    assert_eq!(alice.email, "alice@example.com");
    match users
        .create(new_user("ALICE@example.com", Role::Prosumer, None))
        .await
    {
        Err(Error::Conflict { entity, field }) => {
            assert_eq!((entity, field.as_str()), ("user", "email"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let found = users.find_by_email("alice@EXAMPLE.com").await.unwrap();
    assert_eq!(found.as_ref().map(|u| u.id), Some(alice.id));
    // Updating another user to the same email conflicts too.
    let bob = users
        .create(new_user("bob@example.com", Role::Customer, None))
        .await
        .unwrap();
    let err = users
        .update(
            bob.id,
            UserUpdate {
                email: Some("Alice@example.com".into()),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { ref field, .. } if field == "email"),
        "{err:?}"
    );
}

async fn password_hash_never_serialized_and_verify_works(h: &Harness) {
    let users = h.crm.users();
    let user = users
        .create(new_user(
            "carol@example.com",
            Role::Admin,
            Some("correct horse battery"),
        ))
        .await
        .unwrap();
    // Inputs carry the plain password; their Debug (what a log line shows) must not.
    let input = new_user("dave@example.com", Role::Customer, Some("hunter2hunter2"));
    let update = crm::UserUpdate {
        password: Some("hunter2hunter2".into()),
        ..crm::UserUpdate::default()
    };
    for shown in [format!("{input:?}"), format!("{update:?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    let json = serde_json::to_string(&user).unwrap();
    assert!(!json.contains("argon2"), "{json}");
    assert!(!json.contains("password"), "{json}");
    let stored: String = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(h.crm.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains("correct horse"));

    let ok = users
        .verify_password(" CAROL@example.com", "correct horse battery")
        .await
        .unwrap();
    assert_eq!(ok.map(|u| u.id), Some(user.id));
    assert!(
        users
            .verify_password("carol@example.com", "wrong password")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        users
            .verify_password("nobody@example.com", "correct horse battery")
            .await
            .unwrap()
            .is_none()
    );

    // A user without a password cannot log in with any.
    users
        .create(new_user("gw@example.com", Role::Gateway, None))
        .await
        .unwrap();
    assert!(
        users
            .verify_password("gw@example.com", "")
            .await
            .unwrap()
            .is_none()
    );

    // Deactivated users cannot log in; a new password replaces the old one.
    users
        .update(
            user.id,
            UserUpdate {
                active: Some(false),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(
        users
            .verify_password("carol@example.com", "correct horse battery")
            .await
            .unwrap()
            .is_none()
    );
    users
        .update(
            user.id,
            UserUpdate {
                active: Some(true),
                password: Some("another long secret".into()),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(
        users
            .verify_password("carol@example.com", "correct horse battery")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        users
            .verify_password("carol@example.com", "another long secret")
            .await
            .unwrap()
            .is_some()
    );
}

async fn user_validation_names_each_field(h: &Harness) {
    let err = h
        .crm
        .users()
        .create(NewUser {
            email: "not-an-email".into(),
            display_name: "   ".into(),
            role: Role::Customer,
            password: Some("short".into()),
        })
        .await
        .unwrap_err();
    let Error::Validation(errors) = err else {
        panic!("expected validation, got {err:?}")
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["email", "display_name", "password"]);
}

async fn users_list_update_delete(h: &Harness) {
    let users = h.crm.users();
    for i in 0..5 {
        let role = if i % 2 == 0 {
            Role::Customer
        } else {
            Role::Analyst
        };
        users
            .create(new_user(&format!("u{i}@example.com"), role, None))
            .await
            .unwrap();
    }
    let customers = users
        .list(
            &UserFilter {
                role: Some(Role::Customer),
                ..UserFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(customers.len(), 3);
    let page2 = users
        .list(
            &UserFilter::default(),
            Page {
                limit: 2,
                offset: 2,
            },
        )
        .await
        .unwrap();
    let emails: Vec<&str> = page2.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["u2@example.com", "u3@example.com"]);

    h.clock.advance(1000);
    let u = users
        .update(
            page2[0].id,
            UserUpdate {
                display_name: Some("Renamed".into()),
                role: Some(Role::Support),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (u.display_name.as_str(), u.role),
        ("Renamed", Role::Support)
    );
    assert_eq!(u.updated_ms, u.created_ms + 1000);
    assert_eq!(users.get(u.id).await.unwrap(), u);
    let inactive = users
        .list(
            &UserFilter {
                active: Some(false),
                ..UserFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert!(inactive.is_empty());

    users.delete(u.id).await.unwrap();
    assert!(matches!(
        users.get(u.id).await,
        Err(Error::NotFound { entity: "user", .. })
    ));
    assert!(matches!(
        users.delete(u.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        users.update(u.id, UserUpdate::default()).await,
        Err(Error::NotFound { .. })
    ));
}

both!(
    email_lower_cased_and_unique,
    password_hash_never_serialized_and_verify_works,
    user_validation_names_each_field,
    users_list_update_delete,
);
