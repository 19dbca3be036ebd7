//! `/api/v1/devices`: the device registry. The portal reads devices (customers only
//! those on their own sites), staff register, change and remove them; every change is
//! mirrored into the registry cache the write path resolves device ids with.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use crm::{Device, DeviceFilter, DeviceKind, DeviceStatus, NewDevice, SiteAssignment};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{Caller, Id, JsonBody, Listing, Params, missing, owner, owns_site, page};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::openapi::{ErrorBody, ValidationErrorBody};

/// Query parameters of `GET /api/v1/devices`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DevicesQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Rows to skip (default 0).
    offset: Option<u64>,
    /// Only this site's devices.
    site_id: Option<i64>,
    /// `true`: only devices on no site (registered from telemetry, not yet assigned).
    unassigned: Option<bool>,
    /// Only this kind.
    kind: Option<DeviceKind>,
    /// Only this status.
    status: Option<DeviceStatus>,
    /// Only devices on this user's sites (a customer always gets only their own).
    user_id: Option<i64>,
}

/// Lists devices by id; a customer sees only the devices on their own sites.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    security(("bearer" = []), ("token" = [])),
    params(DevicesQuery),
    responses(
        (status = 200, description = "One page of devices", body = Listing<Device>),
        (status = 400, description = "An unknown or malformed query parameter, or site_id with unassigned=true", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
    )
)]
pub(crate) async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<DevicesQuery>,
) -> Result<Json<Listing<Device>>, ApiError> {
    let site = match (query.site_id, query.unassigned) {
        (Some(_), Some(true)) => {
            return Err(ApiError::BadRequest(
                "site_id and unassigned=true exclude each other; give one".to_owned(),
            ));
        }
        (Some(site_id), _) => Some(SiteAssignment::Site(site_id)),
        (None, Some(true)) => Some(SiteAssignment::Unassigned),
        (None, _) => None,
    };
    let page = page(query.limit, query.offset);
    let filter = DeviceFilter {
        site,
        kind: query.kind,
        status: query.status,
        user_id: owner(&caller).or(query.user_id),
    };
    let devices = state.crm().devices().list(&filter, page).await?;
    Ok(Json(Listing::new(devices, page)))
}

/// Registers a device, on a site or unassigned; its readings resolve to that site
/// from now on.
#[utoipa::path(
    post,
    path = "/api/v1/devices",
    tag = "devices",
    security(("bearer" = []), ("token" = [])),
    request_body = NewDevice,
    responses(
        (status = 201, description = "The device as stored", body = Device),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 409, description = "The device id, meter number, serial number or MAC address is taken (named)", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named (site_id when the site does not exist)", body = ValidationErrorBody),
    )
)]
pub(crate) async fn create_device(
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewDevice>,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    let device = to_the_end(async move {
        let device = state.crm().devices().create(new).await?;
        state.devices().stored(&device);
        Ok(device)
    })
    .await?;
    tracing::info!(device_id = %device.device_id, site_id = ?device.site_id, "device registered");
    Ok((StatusCode::CREATED, Json(device)))
}

/// One device; a device that is not on one of the customer's sites is "not found".
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Device id (the registry's, not the telemetry device_id)")),
    responses(
        (status = 200, description = "The device", body = Device),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Gateways and write tokens do not read the portal", body = ErrorBody),
        (status = 404, description = "No such device, or not on the caller's sites", body = ErrorBody),
    )
)]
pub(crate) async fn get_device(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<Device>, ApiError> {
    let crm = state.crm();
    let device = crm.devices().get(id).await?;
    let Some(user_id) = owner(&caller) else {
        return Ok(Json(device));
    };
    let site = match device.site_id {
        Some(site_id) => match crm.sites().get(site_id).await {
            Ok(site) => Some(site),
            Err(crm::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    match site {
        Some(site) if owns_site(crm, user_id, &site).await? => Ok(Json(device)),
        _ => Err(missing("device", id)),
    }
}

/// Replaces the device's fields but its last-seen time; assigning or moving a device
/// to a site is an update (readings resolve to the new site at once).
#[utoipa::path(
    put,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Device id")),
    request_body = NewDevice,
    responses(
        (status = 200, description = "The device as stored", body = Device),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
        (status = 409, description = "An identifier is taken (named)", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named", body = ValidationErrorBody),
    )
)]
pub(crate) async fn update_device(
    State(state): State<AppState>,
    Id(id): Id,
    JsonBody(new): JsonBody<NewDevice>,
) -> Result<Json<Device>, ApiError> {
    let device = to_the_end(async move {
        let devices = state.crm().devices();
        let before = devices.get(id).await?;
        let device = devices.update(id, new).await?;
        if before.device_id != device.device_id {
            // The telemetry id changed: readings under the old one are unknown now.
            state.devices().renamed(&before.device_id, &device);
        }
        state.devices().stored(&device);
        Ok(device)
    })
    .await?;
    tracing::info!(device_id = %device.device_id, site_id = ?device.site_id, "device updated");
    Ok(Json(device))
}

/// Removes the device from the registry; its readings stay in the store.
#[utoipa::path(
    delete,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    security(("bearer" = []), ("token" = [])),
    params(("id" = i64, Path, description = "Device id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Needs an admin or support user, or an admin token", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
pub(crate) async fn delete_device(
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let device = to_the_end(async move {
        let devices = state.crm().devices();
        let device = devices.get(id).await?;
        devices.delete(id).await?;
        state.devices().deleted(&device);
        Ok(device)
    })
    .await?;
    tracing::info!(device_id = %device.device_id, "device removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a change of the side store and the registry cache update that follows it on a
/// task of its own, awaited here: a client that goes away drops this handler's future
/// at any await, and between the commit and the cache update that would leave the
/// write path with the old state (until the next reload).
pub(super) async fn to_the_end<T: Send + 'static>(
    change: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(change).await?
}

/// Reloads the registry cache after a delete whose cascade unassigned devices (a user,
/// an account or a site): the store knows which, the cache is rebuilt from it.
pub(super) async fn reload_registry(state: &AppState) -> Result<(), ApiError> {
    state.devices().reload().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Waker};
    use std::time::Duration;

    use crm::Role;

    use super::*;
    use crate::testing::TestApp;

    /// Polls `change` once, as a server does before the client goes away, and drops it.
    fn abandon<T>(change: impl Future<Output = T>) {
        let mut change = pin!(change);
        let poll = change
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(poll.is_pending(), "the change waits for the side store");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_change_whose_client_went_away_reaches_the_store_and_the_cache() {
        let app = TestApp::new().await;
        let (owner, _) = app.user(Role::Customer, "owner@example.com").await;
        let (_, home) = app.home(&owner, "ACC-1").await;
        let registry = app.state.devices();
        let device = || NewDevice::new(DeviceKind::Meter, "m-1");

        abandon(create_device(State(app.state.clone()), JsonBody(device())));
        let mut assigned = device();
        assigned.site_id = Some(home.id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let id = loop {
            if let Some(made) = app.crm.devices().get_by_device_id("m-1").await.unwrap()
                && registry.site_of("m-1") == Some(None)
            {
                break made.id;
            }
            assert!(tokio::time::Instant::now() < deadline, "not created");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };

        abandon(update_device(
            State(app.state.clone()),
            Id(id),
            JsonBody(assigned),
        ));
        loop {
            let stored = app.crm.devices().get(id).await.unwrap();
            if stored.site_id == Some(home.id) && registry.site_of("m-1") == Some(Some(home.id)) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the store and the cache must both have the assignment: {stored:?}, {:?}",
                registry.site_of("m-1")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        abandon(delete_device(State(app.state.clone()), Id(id)));
        loop {
            let stored = app.crm.devices().get_by_device_id("m-1").await.unwrap();
            if stored.is_none() && registry.site_of("m-1").is_none() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not deleted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        app.finish().await;
    }
}
