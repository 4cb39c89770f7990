//! The files of an export: a table's columns and typed values, written as Parquet (the
//! low-level column writers: one row group per flush) or RFC 4180 CSV, one file per
//! month partition (`<table>/month=YYYY-MM/part-<run>.<ext>`), each hashed as written.
//!
//! Memory stays bounded: CSV rows go straight to their file; Parquet rows wait in their
//! month's buffer until it holds a row group, and when every buffer together passes
//! [`BUFFER_BYTES`] the largest is written out as a (smaller) row group.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType};
use parquet::data_type::{Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Rows of one Parquet row group at most.
const ROW_GROUP_ROWS: usize = 65_536;
/// Bytes (roughly) that the Parquet buffers of one table may hold together.
const BUFFER_BYTES: usize = 32 << 20;
/// Decimal precision and scale of money: 19 digits of units (an `i64`) and 9 of nanos,
/// in 12 bytes (the smallest fixed length that holds 28 digits).
pub const MONEY_PRECISION: u32 = 28;
/// See [`MONEY_PRECISION`].
pub const MONEY_SCALE: u32 = 9;
const MONEY_BYTES: usize = 12;

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet (Snappy pages).
    Parquet,
    /// RFC 4180 CSV, UTF-8, with a header line.
    Csv,
}

impl Format {
    /// `parquet` or `csv`: the name on the command line, in the manifest and the file
    /// extension.
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }

    /// The format named `s`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 64-bit integer.
    Int,
    /// UTF-8 text.
    Text,
    /// An instant, UTC, microseconds.
    Time,
    /// A calendar date.
    Date,
    /// Exact money: DECIMAL(28, 9).
    Money,
}

/// A column of an exported table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Whether it may be null.
    pub nullable: bool,
}

/// A required column.
pub const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
    }
}

/// A nullable column.
pub const fn opt(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: true,
    }
}

/// One value of a row; [`Value::Null`] only in nullable columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Null.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// An instant (UTC).
    Time(NaiveDateTime),
    /// A date.
    Date(NaiveDate),
    /// Money in nano units (`units * 10^9 + nanos`).
    Money(i128),
}

impl Value {
    /// The text `s`, or null when it is `None`.
    pub fn opt_text(s: Option<String>) -> Value {
        s.map_or(Value::Null, Value::Text)
    }

    /// The time `t`, or null.
    pub fn opt_time(t: Option<NaiveDateTime>) -> Value {
        t.map_or(Value::Null, Value::Time)
    }

    /// The integer `n`, or null.
    pub fn opt_int(n: Option<i64>) -> Value {
        n.map_or(Value::Null, Value::Int)
    }

    /// Roughly how many bytes it holds in a buffer.
    fn weight(&self) -> usize {
        match self {
            Value::Text(s) => 24 + s.len(),
            _ => 24,
        }
    }
}

/// `YYYY-MM`: the partition of the time `t`.
pub fn month_of(t: NaiveDateTime) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

/// An RFC 3339 UTC time with microseconds: `2024-03-01T09:30:00.000000Z`.
pub fn time_text(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Exact decimal text of nano units: `-12.340000000`.
pub fn money_text(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// The Parquet schema of a table: `message <table> { required int64 id; ... }`.
pub fn message_type(table: &str, columns: &[Column]) -> String {
    let mut s = format!("message {table} {{\n");
    for c in columns {
        let repetition = if c.nullable { "optional" } else { "required" };
        let ty = match c.kind {
            Kind::Int => "int64".to_owned(),
            Kind::Text => "binary".to_owned(),
            Kind::Time => "int64".to_owned(),
            Kind::Date => "int32".to_owned(),
            Kind::Money => format!("fixed_len_byte_array({MONEY_BYTES})"),
        };
        let logical = match c.kind {
            Kind::Int => String::new(),
            Kind::Text => " (STRING)".to_owned(),
            Kind::Time => " (TIMESTAMP(MICROS,true))".to_owned(),
            Kind::Date => " (DATE)".to_owned(),
            Kind::Money => format!(" (DECIMAL({MONEY_PRECISION},{MONEY_SCALE}))"),
        };
        s.push_str(&format!("  {repetition} {ty} {}{logical};\n", c.name));
    }
    s.push('}');
    s
}

/// One written file, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The table.
    pub table: String,
    /// The partition, `YYYY-MM`.
    pub month: String,
    /// Path under the export's directory, `/`-separated.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Hashing<W> {
    fn done(mut self) -> Result<(u64, String)> {
        self.inner.flush().map_err(io)?;
        let digest = self.hash.finalize();
        let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok((self.bytes, hex))
    }
}

type Out = Hashing<BufWriter<File>>;

enum Sink {
    Parquet {
        writer: SerializedFileWriter<Out>,
        buffer: Vec<Vec<Value>>,
        weight: usize,
    },
    Csv(csv::Writer<Out>),
}

struct Part {
    path: String,
    rows: u64,
    sink: Sink,
}

fn io(e: std::io::Error) -> Error {
    Error::Internal(format!("export: cannot write a file: {e}"))
}

fn pq(e: parquet::errors::ParquetError) -> Error {
    Error::Internal(format!("export: cannot write a Parquet file: {e}"))
}

/// The files of one table in one export run: a file per month.
pub struct TableWriter {
    root: PathBuf,
    table: &'static str,
    columns: &'static [Column],
    format: Format,
    run: String,
    schema: Arc<parquet::schema::types::Type>,
    props: Arc<WriterProperties>,
    parts: BTreeMap<String, Part>,
    weight: usize,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("table", &self.table)
            .field("format", &self.format)
            .field("months", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl TableWriter {
    /// The files of `table` under `root`, named after the run `run`.
    pub fn new(
        root: &Path,
        table: &'static str,
        columns: &'static [Column],
        format: Format,
        run: &str,
    ) -> Result<TableWriter> {
        let schema = parse_message_type(&message_type(table, columns)).map_err(pq)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("crm-comms {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(TableWriter {
            root: root.to_owned(),
            table,
            columns,
            format,
            run: run.to_owned(),
            schema: Arc::new(schema),
            props: Arc::new(props),
            parts: BTreeMap::new(),
            weight: 0,
        })
    }

    /// Adds `row` (one value per column) to the month `month`.
    pub fn write(&mut self, month: &str, row: Vec<Value>) -> Result<()> {
        if !self.parts.contains_key(month) {
            let part = self.open(month)?;
            self.parts.insert(month.to_owned(), part);
        }
        let Some(part) = self.parts.get_mut(month) else {
            return Err(Error::Internal("export: partition vanished".into()));
        };
        part.rows += 1;
        match &mut part.sink {
            Sink::Csv(w) => w
                .write_record(row.iter().map(csv_field))
                .map_err(|e| Error::Internal(format!("export: cannot write a CSV file: {e}")))?,
            Sink::Parquet {
                writer,
                buffer,
                weight,
            } => {
                let w: usize = row.iter().map(Value::weight).sum();
                *weight += w;
                self.weight += w;
                buffer.push(row);
                if buffer.len() >= ROW_GROUP_ROWS {
                    self.weight -= *weight;
                    *weight = 0;
                    write_row_group(writer, self.columns, std::mem::take(buffer))?;
                }
            }
        }
        if self.weight > BUFFER_BYTES {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the largest Parquet buffer out as a row group.
    fn spill(&mut self) -> Result<()> {
        let largest = self
            .parts
            .values_mut()
            .filter_map(|p| match &mut p.sink {
                Sink::Parquet {
                    writer,
                    buffer,
                    weight,
                } => Some((writer, buffer, weight)),
                Sink::Csv(_) => None,
            })
            .max_by_key(|(_, _, weight)| **weight);
        if let Some((writer, buffer, weight)) = largest {
            self.weight -= *weight;
            *weight = 0;
            write_row_group(writer, self.columns, std::mem::take(buffer))?;
        }
        Ok(())
    }

    fn open(&self, month: &str) -> Result<Part> {
        let dir = format!("{}/month={month}", self.table);
        std::fs::create_dir_all(self.root.join(&dir)).map_err(io)?;
        let path = format!("{dir}/part-{}.{}", self.run, self.format.name());
        let file = File::create(self.root.join(&path)).map_err(io)?;
        let out = Hashing {
            inner: BufWriter::with_capacity(256 << 10, file),
            hash: Sha256::new(),
            bytes: 0,
        };
        let sink = match self.format {
            Format::Parquet => Sink::Parquet {
                writer: SerializedFileWriter::new(
                    out,
                    Arc::clone(&self.schema),
                    Arc::clone(&self.props),
                )
                .map_err(pq)?,
                buffer: Vec::new(),
                weight: 0,
            },
            Format::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(out);
                w.write_record(self.columns.iter().map(|c| c.name))
                    .map_err(|e| Error::Internal(format!("export: CSV header: {e}")))?;
                Sink::Csv(w)
            }
        };
        Ok(Part {
            path,
            rows: 0,
            sink,
        })
    }

    /// Closes every file; what was written, by month.
    pub fn finish(self) -> Result<Vec<FileEntry>> {
        let mut entries = Vec::with_capacity(self.parts.len());
        for (month, part) in self.parts {
            let out = match part.sink {
                Sink::Parquet {
                    mut writer, buffer, ..
                } => {
                    if !buffer.is_empty() {
                        write_row_group(&mut writer, self.columns, buffer)?;
                    }
                    writer.into_inner().map_err(pq)?
                }
                Sink::Csv(w) => w
                    .into_inner()
                    .map_err(|e| Error::Internal(format!("export: CSV: {}", e.error())))?,
            };
            let (bytes, sha256) = out.done()?;
            entries.push(FileEntry {
                table: self.table.to_owned(),
                month,
                path: part.path,
                rows: part.rows,
                bytes,
                sha256,
            });
        }
        Ok(entries)
    }
}

/// A CSV field: empty for null, RFC 3339 for times, exact decimal text for money.
fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Int(n) => n.to_string(),
        Value::Text(s) => s.clone(),
        Value::Time(t) => time_text(*t),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Money(n) => money_text(*n),
    }
}

/// Days since 1970-01-01.
fn epoch_days(d: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((d - epoch).num_days()).unwrap_or(i32::MAX)
}

/// Big-endian two's complement in [`MONEY_BYTES`] bytes.
fn money_bytes(n: i128) -> FixedLenByteArray {
    let all = n.to_be_bytes();
    FixedLenByteArray::from(all[all.len() - MONEY_BYTES..].to_vec())
}

/// Writes `rows` as one row group, column by column.
fn write_row_group(
    writer: &mut SerializedFileWriter<Out>,
    columns: &[Column],
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    let mut group = writer.next_row_group().map_err(pq)?;
    for (i, column) in columns.iter().enumerate() {
        let Some(mut out) = group.next_column().map_err(pq)? else {
            return Err(Error::Internal("export: schema has fewer columns".into()));
        };
        let levels: Vec<i16> = rows
            .iter()
            .map(|r| i16::from(!matches!(r.get(i), Some(Value::Null) | None)))
            .collect();
        let def = column.nullable.then_some(levels.as_slice());
        let present = rows.iter().filter_map(|r| r.get(i));
        match column.kind {
            Kind::Int | Kind::Time => {
                let values: Vec<i64> = present
                    .filter_map(|v| match v {
                        Value::Int(n) => Some(*n),
                        Value::Time(t) => Some(t.and_utc().timestamp_micros()),
                        _ => None,
                    })
                    .collect();
                out.typed::<Int64Type>()
                    .write_batch(&values, def, None)
                    .map_err(pq)?;
            }
            Kind::Date => {
                let values: Vec<i32> = present
                    .filter_map(|v| match v {
                        Value::Date(d) => Some(epoch_days(*d)),
                        _ => None,
                    })
                    .collect();
                out.typed::<Int32Type>()
                    .write_batch(&values, def, None)
                    .map_err(pq)?;
            }
            Kind::Text => {
                let values: Vec<ByteArray> = present
                    .filter_map(|v| match v {
                        Value::Text(s) => Some(ByteArray::from(s.as_bytes().to_vec())),
                        _ => None,
                    })
                    .collect();
                out.typed::<ByteArrayType>()
                    .write_batch(&values, def, None)
                    .map_err(pq)?;
            }
            Kind::Money => {
                let values: Vec<FixedLenByteArray> = present
                    .filter_map(|v| match v {
                        Value::Money(n) => Some(money_bytes(*n)),
                        _ => None,
                    })
                    .collect();
                out.typed::<FixedLenByteArrayType>()
                    .write_batch(&values, def, None)
                    .map_err(pq)?;
            }
        }
        out.close().map_err(pq)?;
    }
    group.close().map_err(pq)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_decimal_text_and_twelve_byte_twos_complement() {
        assert_eq!(money_text(12_340_000_000), "12.340000000");
        assert_eq!(money_text(-500_000_000), "-0.500000000");
        assert_eq!(money_text(0), "0.000000000");
        assert_eq!(money_bytes(1).data(), &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(money_bytes(-1).data(), &[0xff; 12]);
        let max = i128::from(i64::MAX) * 1_000_000_000 + 999_999_999;
        assert_eq!(money_bytes(max).data()[0] & 0x80, 0, "fits with its sign");
    }

    #[test]
    fn the_schema_names_every_logical_type_a_reader_needs() {
        const COLUMNS: &[Column] = &[
            col("id", Kind::Int),
            opt("note", Kind::Text),
            col("at", Kind::Time),
            opt("born", Kind::Date),
            col("amount", Kind::Money),
        ];
        let text = message_type("t", COLUMNS);
        assert!(text.contains("required int64 at (TIMESTAMP(MICROS,true));"));
        assert!(text.contains("required fixed_len_byte_array(12) amount (DECIMAL(28,9));"));
        parse_message_type(&text).unwrap();
    }

    #[test]
    fn times_are_utc_with_microseconds() {
        let t = NaiveDate::from_ymd_opt(2024, 3, 1)
            .unwrap()
            .and_hms_micro_opt(9, 30, 0, 5)
            .unwrap();
        assert_eq!(time_text(t), "2024-03-01T09:30:00.000005Z");
        assert_eq!(month_of(t), "2024-03");
    }
}
