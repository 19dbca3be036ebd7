//! Table schemas: which columns a table has, in which order, with which types.
//!
//! A table is created by its first write and grows a column whenever a write brings a
//! new tag or field. A column's type never changes: a write that disagrees is an error
//! for that line only.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::types::{FieldType, TIME_COLUMN};

/// Key of the Arrow field metadata that says what role a column plays.
pub const COLUMN_ROLE_KEY: &str = "gridlake.column";

/// What a column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "type")]
pub enum ColumnKind {
    /// The `time` column.
    Time,
    /// A tag: part of the series key, dictionary-encoded string.
    Tag,
    /// A field of the given type.
    Field(FieldType),
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Its role and type.
    #[serde(flatten)]
    pub kind: ColumnKind,
}

/// The columns of one table. `time` is always column 0.
#[derive(Debug, Clone)]
pub struct TableSchema {
    columns: Vec<ColumnDef>,
    /// Looked up for every tag and field of every row: foldhash rather than SipHash.
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    arrow: SchemaRef,
}

impl TableSchema {
    /// A new table with only its `time` column.
    pub fn new() -> Self {
        Self::from_columns(vec![ColumnDef {
            name: TIME_COLUMN.to_string(),
            kind: ColumnKind::Time,
        }])
    }

    /// Rebuilds a schema from its persisted columns.
    pub(crate) fn from_columns(columns: Vec<ColumnDef>) -> Self {
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let arrow = Arc::new(Schema::new(
            columns.iter().map(arrow_field).collect::<Vec<_>>(),
        ));
        Self {
            columns,
            index,
            arrow,
        }
    }

    /// Columns in table order.
    pub fn columns(&self) -> &[ColumnDef] {
        &self.columns
    }

    /// Position of a column by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The kind of the named column, if the table has it.
    pub fn kind(&self, name: &str) -> Option<ColumnKind> {
        self.position(name).map(|i| self.columns[i].kind)
    }

    /// The Arrow schema of the table.
    pub fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow
    }

    /// Positions of the tag columns, in table order: with `time`, the series key.
    pub fn tag_positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kind == ColumnKind::Tag)
            .map(|(i, _)| i)
    }

    /// A copy with `added` appended.
    pub(crate) fn extended(&self, added: impl IntoIterator<Item = ColumnDef>) -> Self {
        let mut columns = self.columns.clone();
        columns.extend(added);
        Self::from_columns(columns)
    }
}

/// Column positions of the keys of the previous row, by key position: rows of one
/// request nearly always name the same columns in the same order, so comparing a key
/// with the one the previous row had in its place is cheaper than hashing it.
#[derive(Debug, Default)]
pub(crate) struct KeySlots<'a> {
    tags: Vec<(&'a str, usize)>,
    fields: Vec<(&'a str, usize)>,
}

impl<'a> KeySlots<'a> {
    /// Position of the `n`-th tag key of a row.
    #[inline]
    pub(crate) fn tag(&mut self, n: usize, key: &'a str, schema: &TableSchema) -> Option<usize> {
        slot(&mut self.tags, n, key, schema)
    }

    /// Position of the `n`-th field key of a row.
    #[inline]
    pub(crate) fn field(&mut self, n: usize, key: &'a str, schema: &TableSchema) -> Option<usize> {
        slot(&mut self.fields, n, key, schema)
    }
}

#[inline]
fn slot<'a>(
    slots: &mut Vec<(&'a str, usize)>,
    n: usize,
    key: &'a str,
    schema: &TableSchema,
) -> Option<usize> {
    if let Some((cached, i)) = slots.get(n)
        && *cached == key
    {
        return Some(*i);
    }
    let i = schema.position(key)?;
    if n < slots.len() {
        slots[n] = (key, i);
    } else if n == slots.len() {
        slots.push((key, i));
    }
    Some(i)
}

impl Default for TableSchema {
    fn default() -> Self {
        Self::new()
    }
}

impl ColumnDef {
    /// The column an Arrow field of a table's schema stands for, from its role metadata
    /// and type; `None` for a field gridlake did not make.
    pub(crate) fn from_arrow(field: &Field) -> Option<ColumnDef> {
        let kind = match field.metadata().get(COLUMN_ROLE_KEY).map(String::as_str)? {
            "time" if field.data_type() == &time_data_type() => ColumnKind::Time,
            "tag" if field.data_type() == &tag_data_type() => ColumnKind::Tag,
            "field" => ColumnKind::Field(match field.data_type() {
                DataType::Float64 => FieldType::F64,
                DataType::Int64 => FieldType::I64,
                DataType::UInt64 => FieldType::U64,
                DataType::Boolean => FieldType::Bool,
                DataType::Utf8 => FieldType::String,
                _ => return None,
            }),
            _ => return None,
        };
        Some(ColumnDef {
            name: field.name().clone(),
            kind,
        })
    }
}

/// The Arrow type of a field type.
pub(crate) fn field_data_type(t: FieldType) -> DataType {
    match t {
        FieldType::F64 => DataType::Float64,
        FieldType::I64 => DataType::Int64,
        FieldType::U64 => DataType::UInt64,
        FieldType::Bool => DataType::Boolean,
        FieldType::String => DataType::Utf8,
    }
}

/// The Arrow type of tag columns.
pub(crate) fn tag_data_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The Arrow type of the `time` column.
pub(crate) fn time_data_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn arrow_field(c: &ColumnDef) -> Field {
    let (data_type, nullable, role) = match c.kind {
        ColumnKind::Time => (time_data_type(), false, "time"),
        ColumnKind::Tag => (tag_data_type(), true, "tag"),
        ColumnKind::Field(t) => (field_data_type(t), true, "field"),
    };
    Field::new(&c.name, data_type, nullable).with_metadata(HashMap::from([(
        COLUMN_ROLE_KEY.to_string(),
        role.to_string(),
    )]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_first_then_columns_in_order_of_appearance() {
        let s = TableSchema::new().extended([
            ColumnDef {
                name: "site_id".into(),
                kind: ColumnKind::Tag,
            },
            ColumnDef {
                name: "power_w".into(),
                kind: ColumnKind::Field(FieldType::F64),
            },
        ]);
        let names: Vec<_> = s
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["time", "site_id", "power_w"]);
        assert_eq!(s.kind("power_w"), Some(ColumnKind::Field(FieldType::F64)));
        assert_eq!(s.tag_positions().collect::<Vec<_>>(), [1]);
        assert_eq!(
            s.arrow_schema()
                .field(1)
                .metadata()
                .get(COLUMN_ROLE_KEY)
                .map(String::as_str),
            Some("tag")
        );
    }

    #[test]
    fn column_defs_round_trip_through_json() {
        let c = ColumnDef {
            name: "x".into(),
            kind: ColumnKind::Field(FieldType::U64),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"name":"x","kind":"field","type":"u64"}"#);
        assert_eq!(serde_json::from_str::<ColumnDef>(&json).unwrap(), c);
    }
}
