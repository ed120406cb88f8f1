//! Forms: the posted fields, and the one adapter from a form to the API's request
//! bodies. A form is turned into the JSON body the API would receive, parsed by the API's
//! own DTO (so poem-openapi's checks and the API's field diagnosis apply) and converted
//! to domain values by the same function the API handler calls. A bad value therefore
//! gets the very message the API gives, shown next to its field.

use crate::validate::body_problem;
use cronflow_jobs::ValidationError;
use poem::{Request, http::Method};
use poem_openapi::types::ParseFromJSON;
use serde_json::Value;
use std::collections::BTreeMap;

/// The fields of a posted form, in order (a field may repeat: checkboxes). The guard
/// reads them once, to check the CSRF token, and leaves them here for the handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct FormFields(pub(crate) Vec<(String, String)>);

impl FormFields {
    /// The fields of `req` (empty for a GET).
    pub(crate) fn of(req: &Request) -> Self {
        req.extensions().get::<FormFields>().cloned().unwrap_or_default()
    }

    /// The query string of `req` (filters and cursors of a page).
    pub(crate) fn query(req: &Request) -> Self {
        FormFields(
            req.uri()
                .query()
                .and_then(|q| serde_urlencoded::from_str(q).ok())
                .unwrap_or_default(),
        )
    }

    /// The first value of `name`, trimmed; empty if absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// Every non-empty value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// The value of `name` as the JSON the API expects: absent when empty, a number when
    /// it reads as one, else the text (which the API then refuses, naming the field).
    pub(crate) fn number(&self, name: &str) -> Option<Value> {
        let v = self.get(name);
        if v.is_empty() {
            None
        } else {
            Some(v.parse::<i64>().map_or_else(|_| Value::from(v), Value::from))
        }
    }

    /// The value of `name` as JSON text, absent when empty.
    pub(crate) fn text(&self, name: &str) -> Option<Value> {
        let v = self.get(name);
        (!v.is_empty()).then(|| Value::from(v))
    }
}

/// `Name: value` lines (headers) or `NAME=value` lines (environment) as a map; a line
/// without the separator keeps an empty value, so the API names it.
pub(crate) fn pairs(text: &str, separator: char) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(separator) {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

/// What was wrong with a form: the message for each field, and those for no field.
#[derive(Debug, Clone, Default)]
pub(crate) struct FormErrors {
    by_field: BTreeMap<String, String>,
    general: Vec<String>,
}

impl FormErrors {
    /// The message for the input named `field` (dotted for nested fields: `target.url`).
    pub(crate) fn of(&self, field: &str) -> Option<&str> {
        self.by_field.get(field).map(String::as_str)
    }

    /// Messages that name no field of the form.
    pub(crate) fn general(&self, fields: &[&str]) -> Vec<String> {
        let mut out = self.general.clone();
        out.extend(
            self.by_field
                .iter()
                .filter(|(f, _)| !fields.contains(&f.as_str()))
                .map(|(_, m)| m.clone()),
        );
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_field.is_empty() && self.general.is_empty()
    }

    fn add(&mut self, field: Option<String>, message: String) {
        match field {
            Some(f) => {
                self.by_field.entry(f).or_insert(message);
            }
            None => self.general.push(message),
        }
    }
}

impl From<ValidationError> for FormErrors {
    /// The API's 422: `"{field}: {message}"`, naming the field.
    fn from(e: ValidationError) -> Self {
        let mut errors = FormErrors::default();
        errors.add(Some(e.field.to_string()), e.to_string());
        errors
    }
}

/// Parses `body` as the API's request type `T` for `method` `api_path`, exactly as the
/// API does: a body that does not fit the schema gets the API's 400 message, naming the
/// field when the API would.
pub(crate) fn parse_body<T: ParseFromJSON>(
    method: &Method,
    api_path: &str,
    body: Value,
) -> Result<T, FormErrors> {
    if let Some((field, message)) = body_problem(method, api_path, &body) {
        let mut errors = FormErrors::default();
        errors.add(Some(field.clone()), format!("{field}: {message}"));
        return Err(errors);
    }
    T::parse_from_json(Some(body)).map_err(|e| {
        let mut errors = FormErrors::default();
        errors.add(None, e.into_message());
        errors
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_text_when_they_are_not_numbers_so_the_api_names_them() {
        let f = FormFields(vec![
            ("a".into(), " 30 ".into()),
            ("b".into(), "ten".into()),
            ("c".into(), "".into()),
        ]);
        assert_eq!(f.number("a"), Some(Value::from(30)));
        assert_eq!(f.number("b"), Some(Value::from("ten")));
        assert_eq!(f.number("c"), None);
    }

    #[test]
    fn header_lines_become_pairs() {
        let m = pairs("X-Team: ops\n\n  Bad line  \nX-Env:prod", ':');
        assert_eq!(m.get("X-Team").map(String::as_str), Some("ops"));
        assert_eq!(m.get("Bad line").map(String::as_str), Some(""));
        assert_eq!(m.get("X-Env").map(String::as_str), Some("prod"));
    }
}
