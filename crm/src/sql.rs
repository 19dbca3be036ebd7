//! Small helpers shared by the repositories: dynamic statements, row access, pagination.
//!
//! All SQL is written once for both backends: `$n` placeholders (SQLite accepts them
//! too), BIGINT ids and ms times, and only types the `Any` driver maps on both sides
//! (BIGINT, DOUBLE PRECISION/REAL, TEXT; flags are BOOLEAN on PostgreSQL and INTEGER on
//! SQLite, read by [`flag`]).

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe, Row};

/// One bound value of a statement assembled at run time.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    OptFloat(Option<f64>),
    Bool(bool),
}

/// A statement and its arguments, with `$n` numbering kept in step.
#[derive(Debug, Default)]
pub(crate) struct Stmt {
    pub(crate) sql: String,
    args: Vec<Arg>,
}

impl Stmt {
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Adds an argument and returns its placeholder (`$3`).
    pub(crate) fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// Appends `WHERE <column_op> $n` for the first condition (`first` is then cleared),
    /// `AND <column_op> $n` after it, binding `arg` as `$n`.
    pub(crate) fn filter(&mut self, first: &mut bool, column_op: &str, arg: Arg) {
        let p = self.arg(arg);
        self.sql.push_str(if std::mem::take(first) {
            " WHERE "
        } else {
            " AND "
        });
        self.sql.push_str(column_op);
        self.sql.push(' ');
        self.sql.push_str(&p);
    }

    /// Appends ` LIMIT .. OFFSET ..` for `page`.
    pub(crate) fn page(&mut self, page: Page) {
        let limit = self.arg(Arg::Int(i64::from(page.limit())));
        let offset = self.arg(Arg::Int(i64::try_from(page.offset).unwrap_or(i64::MAX)));
        self.sql
            .push_str(&format!(" LIMIT {limit} OFFSET {offset}"));
    }

    pub(crate) fn query(&self) -> Query<'_, Any, AnyArguments> {
        bind_all(sqlx::query(AssertSqlSafe(self.sql.as_str())), &self.args)
    }
}

pub(crate) fn bind_all<'q>(
    mut q: Query<'q, Any, AnyArguments>,
    args: &[Arg],
) -> Query<'q, Any, AnyArguments> {
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s.clone()),
            Arg::OptText(s) => q.bind(s.clone()),
            Arg::Int(i) => q.bind(*i),
            Arg::OptInt(i) => q.bind(*i),
            Arg::OptFloat(f) => q.bind(*f),
            Arg::Bool(b) => q.bind(*b),
        };
    }
    q
}

/// A statement from text we wrote (column lists are constants, values are bound).
pub(crate) fn query(sql: &str) -> Query<'_, Any, AnyArguments> {
    sqlx::query(AssertSqlSafe(sql))
}

/// Reads a flag column: BOOLEAN on PostgreSQL, INTEGER 0/1 on SQLite.
pub(crate) fn flag(row: &AnyRow, column: &str) -> sqlx::Result<bool> {
    match row.try_get::<bool, _>(column) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

/// Reads a text column holding one of an enumeration's names.
pub(crate) fn parsed<T: std::str::FromStr>(row: &AnyRow, column: &str) -> sqlx::Result<T> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|_| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unexpected value {text:?}").into(),
    })
}

/// Limit/offset pagination for list calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Page {
    /// Rows to return; clamped to `1..=`[`Page::MAX_LIMIT`].
    pub limit: u32,
    /// Rows to skip.
    pub offset: u64,
}

impl Page {
    /// The largest page a list call returns.
    pub const MAX_LIMIT: u32 = 1000;

    /// The first `limit` rows.
    pub fn first(limit: u32) -> Self {
        Self { limit, offset: 0 }
    }

    pub(crate) fn limit(self) -> u32 {
        self.limit.clamp(1, Self::MAX_LIMIT)
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::first(100)
    }
}

/// Declares a text-backed enumeration with `as_str`, `FromStr`, `Display`, serde names and
/// an OpenAPI schema (a string enum of the same names). Values order as declared.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize,
            serde::Deserialize,
        )]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in the database and used in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::UnknownName(s.to_owned())),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // Written out rather than derived: utoipa's derive does not see the
        // `#[serde(rename = $text)]` above through the macro (the literal arrives
        // wrapped in an invisible group) and would list the Rust variant names.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    };
}
pub(crate) use text_enum;
