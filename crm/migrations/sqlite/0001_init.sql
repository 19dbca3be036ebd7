-- crm side store, SQLite. Ids are INTEGER PRIMARY KEY (64-bit rowids), times are INTEGER
-- ms since the Unix epoch, flags are INTEGER 0/1. Keep in step with ../postgres.

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    account_number TEXT NOT NULL UNIQUE,
    account_type TEXT NOT NULL,
    status TEXT NOT NULL,
    billing_email TEXT,
    tax_id TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX accounts_user_id ON accounts (user_id);

CREATE TABLE sites (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    street TEXT,
    street_number TEXT,
    city TEXT,
    postal_code TEXT,
    state TEXT,
    country TEXT,
    latitude REAL,
    longitude REAL,
    time_zone TEXT NOT NULL,
    property_type TEXT NOT NULL,
    is_primary INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX sites_account_id ON sites (account_id);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    device_id TEXT NOT NULL UNIQUE,
    site_id INTEGER REFERENCES sites (id) ON DELETE SET NULL,
    name TEXT,
    meter_number TEXT UNIQUE,
    serial_number TEXT UNIQUE,
    mac_address TEXT UNIQUE,
    manufacturer TEXT,
    model TEXT,
    status TEXT NOT NULL,
    last_seen_ms INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX devices_site_id ON devices (site_id);

CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_ms ON sessions (expires_ms);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    site_id INTEGER REFERENCES sites (id) ON DELETE CASCADE,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE login_attempts (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    ip TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX login_attempts_key ON login_attempts (email, ip, at_ms);
