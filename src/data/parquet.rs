//! Parquet data files, one row at a time as JSON values (list and struct columns become lists
//! and objects), through arrow-rs's `parquet` crate and its record reader: no dataframe engine.
//!
//! Owns: opening a Parquet file and turning its rows into JSON. Does not: know what a row means
//! (see `layout`).

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

use super::DataError;

/// A Parquet error, or a panic inside the `parquet` crate (some corrupt files make it unwrap a
/// missing field or overflow a capacity; found by fuzzing, `fuzz/`), as one message.
fn read_err(what: String, e: String) -> DataError {
    DataError::Source {
        what,
        msg: format!("cannot read it as Parquet ({e}); is the file truncated or not Parquet?"),
    }
}

/// `f`, a call into the `parquet` crate, with its panics contained (see [`read_err`]).
fn guarded<T>(
    what: impl Fn() -> String,
    f: impl FnOnce() -> parquet::errors::Result<T>,
) -> Result<T, DataError> {
    match crate::errors::contain(f) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(read_err(what(), e.to_string())),
        Err(panic) => Err(read_err(what(), format!("the reader failed: {panic}"))),
    }
}

fn open(path: &Path) -> Result<SerializedFileReader<File>, DataError> {
    let file = File::open(path).map_err(|err| DataError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    guarded(
        || path.display().to_string(),
        || SerializedFileReader::new(file),
    )
}

/// The row count in the file's footer.
pub fn count_rows(path: &Path) -> Result<usize, DataError> {
    let n = open(path)?.metadata().file_metadata().num_rows();
    usize::try_from(n).map_err(|_| DataError::Source {
        what: path.display().to_string(),
        msg: format!("its footer gives {n} rows"),
    })
}

/// Call `f(i, row)` for every row `i` (0-based) of the Parquet file `path`.
pub fn for_each_row<E: From<DataError>>(
    path: &Path,
    mut f: impl FnMut(usize, Value) -> Result<(), E>,
) -> Result<(), E> {
    let reader = open(path)?;
    let mut rows = guarded(|| path.display().to_string(), || reader.get_row_iter(None))?;
    for i in 0.. {
        let at = || format!("{}: row {i}", path.display());
        let Some(row) = guarded(at, || rows.next().transpose())? else {
            break;
        };
        let value = guarded(at, || Ok(row.to_json_value()))?;
        f(i, value)?;
    }
    Ok(())
}

/// Write `records` as a Parquet file in TRL's layout, the way `datasets` stores it: `prompt`,
/// `chosen`, `rejected`, each a string column or a list of `{content, role}` structs (as the
/// first record has it), one row group, `compression`. For tests and benchmarks that need
/// Parquet data; the reader above reads it back to the same records.
pub fn write_records(
    path: &Path,
    records: &[super::PreferenceRecord],
    compression: parquet::basic::Compression,
) -> Result<(), DataError> {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    use super::Field;

    let fail = |msg: String| DataError::Source {
        what: path.display().to_string(),
        msg,
    };
    let Some(first) = records.first() else {
        return Err(fail("no records to write".into()));
    };
    let part = |r: &super::PreferenceRecord, k: usize| -> Field {
        match k {
            0 => r.prompt.clone(),
            1 => r.chosen.clone(),
            _ => r.rejected.clone(),
        }
    };
    let names = ["prompt", "chosen", "rejected"];
    let is_msgs: Vec<bool> = (0..3)
        .map(|k| matches!(part(first, k), Field::Messages(_)))
        .collect();
    let mut schema = String::from("message schema {\n");
    for (k, name) in names.iter().enumerate() {
        if is_msgs[k] {
            schema.push_str(&format!(
                "OPTIONAL group {name} (LIST) {{ REPEATED group list {{ OPTIONAL group element {{ OPTIONAL BYTE_ARRAY content (UTF8); OPTIONAL BYTE_ARRAY role (UTF8); }} }} }}\n"
            ));
        } else {
            schema.push_str(&format!("REQUIRED BYTE_ARRAY {name} (UTF8);\n"));
        }
    }
    schema.push('}');
    let pq = |e: parquet::errors::ParquetError| fail(format!("cannot write Parquet ({e})"));
    let schema = Arc::new(parse_message_type(&schema).map_err(pq)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(compression)
            .build(),
    );
    let file = File::create(path).map_err(|err| DataError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(pq)?;
    let mut rg = writer.next_row_group().map_err(pq)?;
    // Leaf columns in schema order: a text part is one column, a message part two (content, role).
    let mut leaves: Vec<(usize, Option<bool>)> = Vec::new();
    for (k, &m) in is_msgs.iter().enumerate() {
        if m {
            leaves.push((k, Some(true)));
            leaves.push((k, Some(false)));
        } else {
            leaves.push((k, None));
        }
    }
    for (k, leaf) in leaves {
        let mut col = rg
            .next_column()
            .map_err(pq)?
            .ok_or_else(|| fail("schema has fewer columns than expected".into()))?;
        let (mut values, mut defs, mut reps) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in records.iter().enumerate() {
            match (part(r, k), leaf) {
                (Field::Text(s), None) => values.push(ByteArray::from(s.as_str())),
                (Field::Messages(ms), Some(content)) => {
                    if ms.is_empty() {
                        defs.push(1);
                        reps.push(0);
                    }
                    for (j, m) in ms.iter().enumerate() {
                        let v = if content { &m.content } else { &m.role };
                        values.push(ByteArray::from(v.as_str()));
                        defs.push(4);
                        reps.push(if j == 0 { 0 } else { 1 });
                    }
                }
                _ => {
                    return Err(fail(format!(
                        "record {i}: \"{}\" is not of the first record's kind (text or messages)",
                        names[k]
                    )))
                }
            }
        }
        let w = col.typed::<ByteArrayType>();
        if leaf.is_some() {
            w.write_batch(&values, Some(&defs), Some(&reps))
                .map_err(pq)?;
        } else {
            w.write_batch(&values, None, None).map_err(pq)?;
        }
        col.close().map_err(pq)?;
    }
    rg.close().map_err(pq)?;
    writer.close().map_err(pq)?;
    Ok(())
}
