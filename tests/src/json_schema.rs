//! A small JSON Schema validator for the reports' `--json` documents: the keywords their
//! schemas (`tests/xtask/schemas/*.schema.json`) use and nothing more. `type` (a name or a
//! list), `const`, `enum`, `required`, `properties`, `additionalProperties` (false or a
//! schema), `items`, `minimum`, `$ref` to `#/$defs/NAME`, and `format: date-time` (RFC 3339
//! with a zone). An unknown keyword is an error, so a schema cannot silently check less than
//! it says.

use serde_json::Value;

const KEYWORDS: [&str; 15] = [
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "const",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "format",
    "minimum",
];

/// Every place `document` breaks `schema`, as `path: what` lines; empty when it conforms.
pub fn validate(schema: &Value, document: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, document, "$", &mut errors);
    errors
}

fn check(root: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        errors.push(format!("{path}: the schema here is not an object"));
        return;
    };
    for key in schema.keys() {
        if !KEYWORDS.contains(&key.as_str()) {
            errors.push(format!("{path}: unsupported schema keyword `{key}`"));
        }
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        match reference
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs")?.get(name))
        {
            Some(target) => check(root, target, value, path, errors),
            None => errors.push(format!("{path}: unknown `$ref` {reference}")),
        }
    }
    if let Some(expected) = schema.get("type") {
        let names: Vec<&str> = match expected {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !names.iter().any(|name| has_type(value, name)) {
            errors.push(format!(
                "{path}: {value} is not of type {}",
                names.join(" or ")
            ));
            return;
        }
    }
    if let Some(constant) = schema.get("const") {
        if constant != value {
            errors.push(format!("{path}: {value} is not {constant}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    if let (Some(minimum), Some(number)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if number < minimum {
            errors.push(format!("{path}: {number} is below {minimum}"));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time") {
        if let Some(text) = value.as_str() {
            if !is_rfc3339(text) {
                errors.push(format!(
                    "{path}: `{text}` is not an RFC 3339 date-time with a zone"
                ));
            }
        }
    }
    if let Some(object) = value.as_object() {
        if let Some(Value::Array(required)) = schema.get("required") {
            for key in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(key) {
                    errors.push(format!("{path}: `{key}` is missing"));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, item) in object {
            let item_path = format!("{path}.{key}");
            match (
                properties.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => check(root, property, item, &item_path, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{item_path}: not in the schema"))
                }
                (None, Some(additional @ Value::Object(_))) => {
                    check(root, additional, item, &item_path, errors)
                }
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(root, items, item, &format!("{path}[{index}]"), errors);
        }
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

/// `2026-01-12T09:00:00Z`, `2026-01-12T09:00:00.123+01:00`: RFC 3339's date-time, zone required.
pub fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    let shape = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && matches!(bytes[10], b'T' | b't')
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if !shape {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn date_times_need_a_zone() {
        assert!(is_rfc3339("2026-01-12T09:00:00Z"));
        assert!(is_rfc3339("2026-01-12T09:00:00.5+01:00"));
        assert!(!is_rfc3339("2026-01-12 09:00:00"));
        assert!(!is_rfc3339("2026-01-12T09:00:00"));
        assert!(!is_rfc3339("2026-01-12T09:00:00+0100"));
    }

    #[test]
    fn reports_every_breach() {
        let schema = json!({
            "type": "object",
            "required": ["schema", "n"],
            "additionalProperties": false,
            "properties": {
                "schema": {"const": "x/1"},
                "n": {"type": "integer", "minimum": 0},
                "at": {"type": ["string", "null"], "format": "date-time"},
                "list": {"type": "array", "items": {"$ref": "#/$defs/item"}}
            },
            "$defs": {"item": {"enum": ["a", "b"]}}
        });
        let good = json!({"schema": "x/1", "n": 2, "at": null, "list": ["a"]});
        assert_eq!(validate(&schema, &good), Vec::<String>::new());
        let bad = json!({"schema": "x/2", "n": -1, "at": "2026-01-12 09:00:00", "list": ["c"], "extra": 1});
        let errors = validate(&schema, &bad);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert_eq!(
            validate(&json!({"pattern": "x"}), &json!("x")),
            ["$: unsupported schema keyword `pattern`"]
        );
    }
}
