use crm::{
    AccountFilter, AccountType, AccountUpdate, DeviceFilter, DeviceKind, DeviceStatus, Error,
    NewAccount, NewDevice, NewSite, Page, PropertyType, Role, SiteAssignment, SiteFilter,
    UserFilter,
};

use crate::common::{Harness, T0, both};
use crate::users::new_user;

fn new_account(user_id: i64, number: &str) -> NewAccount {
    NewAccount {
        user_id,
        account_number: number.into(),
        account_type: AccountType::Residential,
        status: crm::AccountStatus::Active,
        billing_email: None,
        tax_id: None,
    }
}

pub(crate) fn new_site(account_id: i64, name: &str) -> NewSite {
    NewSite {
        account_id,
        name: name.into(),
        street: Some("Hauptstraße".into()),
        street_number: Some("1".into()),
        city: Some("Berlin".into()),
        postal_code: Some("10115".into()),
        state: None,
        country: Some("de".into()),
        latitude: Some(52.52),
        longitude: Some(13.405),
        time_zone: "Europe/Berlin".into(),
        property_type: PropertyType::Residential,
        is_primary: true,
    }
}

/// A user with one account and one site; returns (user id, account id, site id).
pub(crate) async fn owner(h: &Harness, email: &str) -> (i64, i64, i64) {
    let user = h
        .crm
        .users()
        .create(new_user(email, Role::Customer, None))
        .await
        .unwrap();
    let account = h
        .crm
        .accounts()
        .create(new_account(user.id, &format!("ACC-{email}")))
        .await
        .unwrap();
    let site = h
        .crm
        .sites()
        .create(new_site(account.id, "Home"))
        .await
        .unwrap();
    (user.id, account.id, site.id)
}

fn fields(err: Error) -> Vec<String> {
    match err {
        Error::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

async fn accounts_unique_number_and_owner(h: &Harness) {
    let (user_id, account_id, _) = owner(h, "a@example.com").await;
    let accounts = h.crm.accounts();
    let err = accounts
        .create(new_account(user_id, "ACC-a@example.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { entity: "account", ref field } if field == "account_number"),
        "{err:?}"
    );
    assert_eq!(
        fields(
            accounts
                .create(new_account(9999, "ACC-2"))
                .await
                .unwrap_err()
        ),
        ["user_id"]
    );
    let mut business = new_account(user_id, "ACC-2");
    business.account_type = AccountType::Business;
    business.billing_email = Some(" Billing@Example.com ".into());
    business.tax_id = Some("DE123456789".into());
    let b = accounts.create(business.clone()).await.unwrap();
    assert_eq!(b.billing_email.as_deref(), Some("billing@example.com"));
    business.status = crm::AccountStatus::Suspended;
    let b = accounts
        .update(b.id, AccountUpdate::from_new(business))
        .await
        .unwrap();
    assert_eq!(b.status, crm::AccountStatus::Suspended);
    let mine = accounts
        .list(
            &AccountFilter {
                user_id: Some(user_id),
                ..AccountFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|a| a.id).collect::<Vec<_>>(),
        [account_id, b.id]
    );
    accounts.delete(b.id).await.unwrap();
    assert!(matches!(
        accounts.get(b.id).await,
        Err(Error::NotFound { .. })
    ));
}

async fn site_validation_names_each_bad_field(h: &Harness) {
    let (user_id, account_id, site_id) = owner(h, "s@example.com").await;
    let sites = h.crm.sites();
    let site = sites.get(site_id).await.unwrap();
    assert_eq!(site.country.as_deref(), Some("DE"));
    assert_eq!(site.latitude, Some(52.52));
    assert_eq!(site.time_zone, "Europe/Berlin");

    let mut bad = new_site(account_id, " ");
    bad.country = Some("Germany".into());
    bad.latitude = Some(91.0);
    bad.longitude = Some(-180.5);
    bad.time_zone = "Mars/Olympus_Mons".into();
    assert_eq!(
        fields(sites.create(bad).await.unwrap_err()),
        ["name", "country", "latitude", "longitude", "time_zone"]
    );
    let mut half = new_site(account_id, "Half");
    half.longitude = None;
    assert_eq!(fields(sites.create(half).await.unwrap_err()), ["longitude"]);
    assert_eq!(
        fields(sites.create(new_site(424242, "Nowhere")).await.unwrap_err()),
        ["account_id"]
    );

    let mut office = new_site(account_id, "Office");
    office.latitude = None;
    office.longitude = None;
    office.property_type = PropertyType::Commercial;
    office.is_primary = false;
    office.time_zone = "America/New_York".into();
    let office = sites.create(office).await.unwrap();
    assert_eq!(office.latitude, None);
    assert!(!office.is_primary);

    let (_, _, other_site) = owner(h, "other@example.com").await;
    let mine = sites
        .list(
            &SiteFilter {
                user_id: Some(user_id),
                ..SiteFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|s| s.id).collect::<Vec<_>>(),
        [site_id, office.id]
    );
    assert!(!mine.iter().any(|s| s.id == other_site));

    let mut renamed = new_site(account_id, "Home sweet home");
    renamed.time_zone = "Europe/Vienna".into();
    let updated = sites.update(site_id, renamed).await.unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.time_zone.as_str()),
        ("Home sweet home", "Europe/Vienna")
    );
    let mut bad = new_site(account_id, "x");
    bad.time_zone = "CEST".into();
    assert_eq!(
        fields(sites.update(site_id, bad).await.unwrap_err()),
        ["time_zone"]
    );
    sites.delete(office.id).await.unwrap();
    assert!(matches!(
        sites.get(office.id).await,
        Err(Error::NotFound { entity: "site", .. })
    ));
}

async fn device_identifiers_unique_and_conflicts_name_the_field(h: &Harness) {
    let (_, _, site_id) = owner(h, "d@example.com").await;
    let devices = h.crm.devices();
    let mut meter = NewDevice::new(DeviceKind::Meter, "meter-1");
    meter.site_id = Some(site_id);
    meter.meter_number = Some("1EMH0012345678".into());
    meter.serial_number = Some("SN-1".into());
    let meter = devices.create(meter).await.unwrap();
    assert_eq!(meter.status, DeviceStatus::Active);

    let mut plug = NewDevice::new(DeviceKind::SmartPlug, "plug-1");
    plug.mac_address = Some("AA-BB-CC-DD-EE-FF".into());
    let plug = devices.create(plug).await.unwrap();
    assert_eq!(plug.mac_address.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    assert_eq!(plug.status, DeviceStatus::Online);

    let conflict = |field: &'static str| {
        move |r: crm::Result<crm::Device>| match r {
            Err(Error::Conflict {
                entity: "device",
                field: f,
            }) => assert_eq!(f, field),
            other => panic!("expected a conflict on {field}, got {other:?}"),
        }
    };
    conflict("device_id")(
        devices
            .create(NewDevice::new(DeviceKind::Meter, "meter-1"))
            .await,
    );
    let mut d = NewDevice::new(DeviceKind::Meter, "meter-2");
    d.meter_number = Some("1EMH0012345678".into());
    conflict("meter_number")(devices.create(d).await);
    let mut d = NewDevice::new(DeviceKind::Inverter, "inv-1");
    d.serial_number = Some("SN-1".into());
    conflict("serial_number")(devices.create(d).await);
    let mut d = NewDevice::new(DeviceKind::SmartPlug, "plug-2");
    d.mac_address = Some("aabb.ccdd.eeff".into());
    conflict("mac_address")(devices.create(d).await);

    let mut d = NewDevice::new(DeviceKind::Meter, "meter-3");
    d.status = Some(DeviceStatus::Charging);
    d.mac_address = Some("not a mac".into());
    d.site_id = Some(site_id);
    assert_eq!(
        fields(devices.create(d).await.unwrap_err()),
        ["mac_address", "status"]
    );
    let mut d = NewDevice::new(DeviceKind::Battery, "bat-1");
    d.site_id = Some(31337);
    assert_eq!(fields(devices.create(d).await.unwrap_err()), ["site_id"]);

    // Devices without identifiers do not collide on the absent ones.
    devices
        .create(NewDevice::new(DeviceKind::Battery, "bat-1"))
        .await
        .unwrap();
    devices
        .create(NewDevice::new(DeviceKind::Battery, "bat-2"))
        .await
        .unwrap();
    let batteries = devices
        .list(
            &DeviceFilter {
                kind: Some(DeviceKind::Battery),
                ..DeviceFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(batteries.len(), 2);
    let on_site = devices
        .list(
            &DeviceFilter {
                site: Some(SiteAssignment::Site(site_id)),
                ..DeviceFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(on_site.iter().map(|d| d.id).collect::<Vec<_>>(), [meter.id]);
    devices.delete(plug.id).await.unwrap();
    assert!(matches!(
        devices.get(plug.id).await,
        Err(Error::NotFound { .. })
    ));
}

async fn resolve_and_register_unassigned(h: &Harness) {
    let (user_id, _, site_id) = owner(h, "r@example.com").await;
    let (stranger, _, _) = owner(h, "stranger@example.com").await;
    let devices = h.crm.devices();
    assert!(devices.resolve("gw-7/inverter").await.unwrap().is_none());

    let mut seen = NewDevice::new(DeviceKind::Inverter, "gw-7/inverter");
    seen.serial_number = Some("INV-7".into());
    let first = devices.register_unassigned(seen.clone()).await.unwrap();
    assert_eq!(first.site_id, None);
    let again = devices.register_unassigned(seen).await.unwrap();
    assert_eq!(again, first, "registering twice returns the same device");
    let (device, site) = devices.resolve("gw-7/inverter").await.unwrap().unwrap();
    assert_eq!((device.id, site), (first.id, None));
    let unassigned = devices
        .list(
            &DeviceFilter {
                site: Some(SiteAssignment::Unassigned),
                ..DeviceFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        unassigned.iter().map(|d| d.id).collect::<Vec<_>>(),
        [first.id]
    );

    // Another device claiming the same serial number is a conflict, not a silent merge.
    let mut clash = NewDevice::new(DeviceKind::Inverter, "gw-8/inverter");
    clash.serial_number = Some("INV-7".into());
    assert!(matches!(
        devices.register_unassigned(clash).await,
        Err(Error::Conflict { ref field, .. }) if field == "serial_number"
    ));

    // Assigning a site is an update; resolve then yields the site.
    let mut assigned = NewDevice::new(DeviceKind::Inverter, "gw-7/inverter");
    assigned.site_id = Some(site_id);
    assigned.serial_number = Some("INV-7".into());
    assigned.status = Some(DeviceStatus::Warning);
    devices.update(first.id, assigned).await.unwrap();
    let (device, site) = devices.resolve("gw-7/inverter").await.unwrap().unwrap();
    assert_eq!(
        (site, device.status),
        (Some(site_id), DeviceStatus::Warning)
    );
    let of_user = |user_id| DeviceFilter {
        user_id: Some(user_id),
        ..DeviceFilter::default()
    };
    let mine = devices
        .list(&of_user(user_id), Page::default())
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|d| d.id).collect::<Vec<_>>(), [first.id]);
    assert!(
        devices
            .list(&of_user(stranger), Page::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Deleting the site leaves the device registered but unassigned.
    h.crm.sites().delete(site_id).await.unwrap();
    let (_, site) = devices.resolve("gw-7/inverter").await.unwrap().unwrap();
    assert_eq!(site, None);
}

async fn last_seen_batched_and_monotonic(h: &Harness) {
    let devices = h.crm.devices();
    for id in ["a", "b", "c"] {
        devices
            .register_unassigned(NewDevice::new(DeviceKind::Meter, id))
            .await
            .unwrap();
    }
    let seen = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
        pairs.iter().map(|(d, t)| ((*d).to_owned(), *t)).collect()
    };
    let last = |id: &'static str| async move {
        devices
            .get_by_device_id(id)
            .await
            .unwrap()
            .unwrap()
            .last_seen_ms
    };
    let moved = devices
        .touch_last_seen(&seen(&[
            ("a", 100),
            ("a", 300),
            ("b", 200),
            ("a", 250),
            ("ghost", 5),
        ]))
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(
        (last("a").await, last("b").await, last("c").await),
        (Some(300), Some(200), None)
    );

    // Older times never move last_seen backwards.
    let moved = devices
        .touch_last_seen(&seen(&[("a", 299), ("b", 400), ("c", 50)]))
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(
        (last("a").await, last("b").await, last("c").await),
        (Some(300), Some(400), Some(50))
    );
    assert_eq!(devices.touch_last_seen(&[]).await.unwrap(), 0);

    // A clock far ahead (year 2100) counts as at most five minutes from now, so the
    // device's correct readings move last_seen again once that time has passed.
    devices
        .touch_last_seen(&seen(&[("c", 4_102_444_800_000)]))
        .await
        .unwrap();
    assert_eq!(last("c").await, Some(T0 + 5 * 60 * 1000));

    // More devices than one statement carries: all move, in one call.
    let mut tx = h.crm.pool().begin().await.unwrap();
    for i in 0..2100 {
        sqlx::query(
            "INSERT INTO devices (kind, device_id, status, created_ms, updated_ms) VALUES ('meter', $1, 'active', 0, 0)",
        )
        .bind(format!("bulk-{i}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let batch: Vec<(String, i64)> = (0..2100).map(|i| (format!("bulk-{i}"), 1000 + i)).collect();
    assert_eq!(devices.touch_last_seen(&batch).await.unwrap(), 2100);
    assert_eq!(
        devices
            .get_by_device_id("bulk-2099")
            .await
            .unwrap()
            .unwrap()
            .last_seen_ms,
        Some(3099)
    );
}

/// The same statement with a NULL and then a value in one place, many times over the
/// pool's connections: PostgreSQL once refused the value on a connection that had cached
/// the statement after the NULL ("incorrect binary data format in bind parameter").
async fn nulls_and_values_alternate_in_one_statement(h: &Harness) {
    let (_, account_id, _) = owner(h, "n@example.com").await;
    for i in 0..12 {
        let mut site = new_site(account_id, &format!("Site {i}"));
        if i % 2 == 0 {
            site.latitude = None;
            site.longitude = None;
            site.street = None;
        }
        let site = h.crm.sites().create(site).await.unwrap();
        assert_eq!(site.latitude.is_some(), i % 2 == 1, "site {i}: {site:?}");
    }
}

/// An edit never moves an account to another user by accident: a `user_id` other than
/// the owner's is refused, naming `user_id`, and only `transfer_owner` moves it.
async fn account_owner_changes_only_by_explicit_transfer(h: &Harness) {
    let (alice, account_id, site_id) = owner(h, "alice@example.com").await;
    let (bob, _, _) = owner(h, "bob@example.com").await;
    let accounts = h.crm.accounts();
    let edit = |user_id: Option<i64>, transfer_owner: bool| AccountUpdate {
        user_id,
        transfer_owner,
        account_number: "ACC-alice@example.com".into(),
        account_type: AccountType::Business,
        status: crm::AccountStatus::Active,
        billing_email: None,
        tax_id: None,
    };

    // Naming the current owner, or no owner, edits the other fields.
    let a = accounts
        .update(account_id, edit(Some(alice), false))
        .await
        .unwrap();
    assert_eq!((a.user_id, a.account_type), (alice, AccountType::Business));
    let a = accounts
        .update(account_id, edit(None, false))
        .await
        .unwrap();
    assert_eq!(a.user_id, alice);

    // Another owner without transfer_owner: refused, nothing changed.
    let mut stale = edit(Some(bob), false);
    stale.status = crm::AccountStatus::Closed;
    let err = accounts.update(account_id, stale).await.unwrap_err();
    assert_eq!(fields(err), ["user_id"]);
    let a = accounts.get(account_id).await.unwrap();
    assert_eq!((a.user_id, a.status), (alice, crm::AccountStatus::Active));

    // transfer_owner needs the new owner, and the new owner must exist.
    assert_eq!(
        fields(
            accounts
                .update(account_id, edit(None, true))
                .await
                .unwrap_err()
        ),
        ["user_id"]
    );
    assert_eq!(
        fields(
            accounts
                .update(account_id, edit(Some(987_654), true))
                .await
                .unwrap_err()
        ),
        ["user_id"]
    );

    // The explicit transfer moves the account and, with it, its sites.
    let a = accounts
        .update(account_id, edit(Some(bob), true))
        .await
        .unwrap();
    assert_eq!(a.user_id, bob);
    let bobs_sites = h
        .crm
        .sites()
        .list(
            &SiteFilter {
                user_id: Some(bob),
                ..SiteFilter::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert!(bobs_sites.iter().any(|s| s.id == site_id));
    assert!(matches!(
        accounts.update(424_242, edit(None, false)).await,
        Err(Error::NotFound {
            entity: "account",
            ..
        })
    ));
}

/// Setting `is_primary` on one site clears it on the account's other sites (and only
/// that account's), on create and on update.
async fn one_primary_site_per_account(h: &Harness) {
    let (_, account_id, home) = owner(h, "p@example.com").await;
    let (_, other_account, other_home) = owner(h, "q@example.com").await;
    let sites = h.crm.sites();
    let primaries = |account_id: i64| async move {
        sites
            .list(
                &SiteFilter {
                    account_id: Some(account_id),
                    ..SiteFilter::default()
                },
                Page::default(),
            )
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.is_primary)
            .map(|s| s.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(primaries(account_id).await, [home]);

    let mut garage = new_site(account_id, "Garage");
    garage.is_primary = false;
    let garage = sites.create(garage).await.unwrap();
    assert_eq!(
        primaries(account_id).await,
        [home],
        "a non-primary site changes nothing"
    );

    h.clock.advance(1000);
    let office = sites.create(new_site(account_id, "Office")).await.unwrap();
    assert_eq!(primaries(account_id).await, [office.id]);
    let cleared = sites.get(home).await.unwrap();
    assert!(!cleared.is_primary);
    assert_eq!(
        cleared.updated_ms,
        T0 + 1000,
        "the cleared site records the change"
    );

    // Update moves it back; updating the primary site itself keeps it primary.
    sites
        .update(garage.id, new_site(account_id, "Garage"))
        .await
        .unwrap();
    assert_eq!(primaries(account_id).await, [garage.id]);
    sites
        .update(garage.id, new_site(account_id, "Garage 2"))
        .await
        .unwrap();
    assert_eq!(primaries(account_id).await, [garage.id]);

    // A failed write clears nothing.
    let mut bad = new_site(account_id, "Bad");
    bad.time_zone = "Nowhere/Nothing".into();
    sites.create(bad.clone()).await.unwrap_err();
    bad.time_zone = "Europe/Berlin".into();
    assert!(matches!(
        sites.update(424_242, bad).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(primaries(account_id).await, [garage.id]);

    // Other accounts keep their primary site.
    assert_eq!(primaries(other_account).await, [other_home]);
}

async fn users_filter_by_email_substring(h: &Harness) {
    let users = h.crm.users();
    for email in ["ann@solar.example", "a_n@grid.example", "bob@solar.example"] {
        users
            .create(crate::users::new_user(email, Role::Customer, None))
            .await
            .unwrap();
    }
    let emails = |part: &'static str| async move {
        users
            .list(
                &UserFilter {
                    email: Some(part.into()),
                    ..UserFilter::default()
                },
                Page::default(),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.email)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        emails("SOLAR").await,
        ["ann@solar.example", "bob@solar.example"]
    );
    // LIKE's wildcards are matched literally.
    assert_eq!(emails("a_n").await, ["a_n@grid.example"]);
    assert!(emails("%").await.is_empty());
}

/// Moving a device between sites records when it left one, so the portal can keep the
/// old site's readings from the new site's customer; nothing else sets or clears it.
async fn leaving_a_site_stamps_assigned_ms(h: &Harness) {
    let (_, account_a, site_a) = owner(h, "a@example.com").await;
    let (_, _, site_b) = owner(h, "b@example.com").await;
    let devices = h.crm.devices();
    let on = |device_id: &str, site_id: Option<i64>| {
        let mut new = NewDevice::new(DeviceKind::Meter, device_id);
        new.site_id = site_id;
        new
    };

    // Created on a site: its history has only ever been that site's.
    let meter = devices.create(on("m1", Some(site_a))).await.unwrap();
    assert_eq!(meter.assigned_ms, None);
    // An edit that keeps the site keeps the time.
    h.clock.advance(1000);
    let mut renamed = on("m1", Some(site_a));
    renamed.name = Some("Hall".into());
    assert_eq!(
        devices.update(meter.id, renamed).await.unwrap().assigned_ms,
        None
    );
    // A -> B: the time it left A.
    h.clock.advance(1000);
    let moved = devices
        .update(meter.id, on("m1", Some(site_b)))
        .await
        .unwrap();
    assert_eq!(
        (moved.site_id, moved.assigned_ms),
        (Some(site_b), Some(T0 + 2000))
    );
    h.clock.advance(1000);
    let kept = devices
        .update(meter.id, on("m1", Some(site_b)))
        .await
        .unwrap();
    assert_eq!(kept.assigned_ms, Some(T0 + 2000), "same site, same time");

    // Unassigned (auto-registered) -> A: nothing to hide.
    let seen = devices
        .register_unassigned(NewDevice::new(DeviceKind::Meter, "m2"))
        .await
        .unwrap();
    assert_eq!(seen.assigned_ms, None);
    let assigned = devices
        .update(seen.id, on("m2", Some(site_a)))
        .await
        .unwrap();
    assert_eq!(assigned.assigned_ms, None);
    // A -> none -> B: B's customer must not see A's part, so the time of leaving A stays.
    h.clock.advance(1000);
    let left = devices.update(seen.id, on("m2", None)).await.unwrap();
    assert_eq!((left.site_id, left.assigned_ms), (None, Some(T0 + 4000)));
    h.clock.advance(1000);
    let arrived = devices
        .update(seen.id, on("m2", Some(site_b)))
        .await
        .unwrap();
    assert_eq!(
        (arrived.site_id, arrived.assigned_ms),
        (Some(site_b), Some(T0 + 4000))
    );

    // Deleting a site (directly, or through its account) is leaving it too: the device
    // unassigned that way must not carry the deleted site's readings to its next site.
    let m3 = devices.create(on("m3", Some(site_a))).await.unwrap();
    let other_a = h
        .crm
        .sites()
        .create(new_site(account_a, "Garage"))
        .await
        .unwrap();
    let m4 = devices.create(on("m4", Some(other_a.id))).await.unwrap();
    h.clock.advance(1000);
    h.crm.sites().delete(site_a).await.unwrap();
    let m3 = devices.get(m3.id).await.unwrap();
    assert_eq!((m3.site_id, m3.assigned_ms), (None, Some(T0 + 6000)));
    assert_eq!(devices.get(m4.id).await.unwrap().assigned_ms, None);
    h.clock.advance(1000);
    h.crm.accounts().delete(account_a).await.unwrap();
    let m4 = devices.get(m4.id).await.unwrap();
    assert_eq!((m4.site_id, m4.assigned_ms), (None, Some(T0 + 7000)));
    let b_meter = devices.get(meter.id).await.unwrap();
    assert_eq!(
        (b_meter.site_id, b_meter.assigned_ms),
        (Some(site_b), Some(T0 + 2000)),
        "devices on other sites are untouched"
    );
    let (user_c, _, site_c) = owner(h, "c@example.com").await;
    let m5 = devices.create(on("m5", Some(site_c))).await.unwrap();
    h.clock.advance(1000);
    h.crm.users().delete(user_c).await.unwrap();
    let m5 = devices.get(m5.id).await.unwrap();
    assert_eq!((m5.site_id, m5.assigned_ms), (None, Some(T0 + 8000)));
}

both!(
    account_owner_changes_only_by_explicit_transfer,
    one_primary_site_per_account,
    users_filter_by_email_substring,
    nulls_and_values_alternate_in_one_statement,
    accounts_unique_number_and_owner,
    site_validation_names_each_bad_field,
    device_identifiers_unique_and_conflicts_name_the_field,
    resolve_and_register_unassigned,
    last_seen_batched_and_monotonic,
    leaving_a_site_stamps_assigned_ms,
);
