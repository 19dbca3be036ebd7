-- When a device's current assignment began: readings before it belong to the site the
-- device left, and the portal does not show them to the new site's customer. Null while
-- the device has never left a site. Keep in step with ../sqlite.

ALTER TABLE devices ADD COLUMN assigned_ms BIGINT;
