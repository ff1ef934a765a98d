//! What a port builder reads: the keys a port type declares, the values
//! given for them (from a `--port` spec or a YAML `ports:` entry, which
//! feed the same [`Values`]), the one error each mistake makes, and what
//! a port type is.

use super::spec::Built;

/// Where a value was written in a config file (a `--port` spec has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

/// How a config file writes a key's value; a `--port` spec writes every
/// value as text, and the YAML reader turns each kind into the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Taken as written (addresses, paths, names, modes).
    Text,
    /// A number (`42`, or YAML's `0x2a`).
    Number,
    /// on or off (YAML's `true`/`false` too).
    OnOff,
    /// A duration: seconds as a number, or text such as `600s`.
    Duration,
}

/// Whether a key must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// May be left out (its default applies).
    Optional,
    /// Must be given (at least once, for a repeatable key).
    Required,
    /// Exactly one of the type's `OneOf` keys must be given.
    OneOf,
}

/// One key a port type takes, declared once: the `--port` parser, the
/// YAML reader, the checks and the help text all read it from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The key as `--port` writes it (and YAML, unless `yaml_list`).
    pub name: &'static str,
    /// A placeholder for the value in help text, e.g. `IP`.
    pub value: &'static str,
    /// How YAML writes the value.
    pub kind: Kind,
    /// Whether it must be given.
    pub need: Need,
    /// May be given more than once (`remote=A,remote=B`).
    pub many: bool,
    /// The YAML spelling of a repeatable key, as one list (`remotes: [..]`).
    pub yaml_list: Option<&'static str>,
    /// The default, for help text.
    pub default: Option<&'static str>,
    /// What it does, one line.
    pub doc: &'static str,
}

impl Key {
    /// An optional key of `kind`.
    pub const fn new(
        name: &'static str,
        kind: Kind,
        value: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            value,
            kind,
            need: Need::Optional,
            many: false,
            yaml_list: None,
            default: None,
            doc,
        }
    }

    /// An optional text key.
    pub const fn text(name: &'static str, value: &'static str, doc: &'static str) -> Key {
        Key::new(name, Kind::Text, value, doc)
    }

    /// An optional on/off key.
    pub const fn on_off(name: &'static str, doc: &'static str) -> Key {
        Key::new(name, Kind::OnOff, "on|off", doc)
    }

    /// This key must be given.
    pub const fn required(mut self) -> Key {
        self.need = Need::Required;
        self
    }

    /// Exactly one of the type's keys so marked must be given.
    pub const fn one_of(mut self) -> Key {
        self.need = Need::OneOf;
        self
    }

    /// Repeatable; YAML writes it as the list `yaml_list`.
    pub const fn many(mut self, yaml_list: &'static str) -> Key {
        self.many = true;
        self.yaml_list = Some(yaml_list);
        self
    }

    /// The default, for help text.
    pub const fn default(mut self, default: &'static str) -> Key {
        self.default = Some(default);
        self
    }

    /// The key as a config file writes it.
    pub fn yaml_name(&self) -> &'static str {
        self.yaml_list.unwrap_or(self.name)
    }

    /// The key for people: `remote` (`remotes:` in a config file).
    pub fn shown(&self) -> String {
        match self.yaml_list {
            Some(list) => format!("{} (in a config file: {list})", self.name),
            None => self.name.to_string(),
        }
    }
}

/// One mistake in a port spec. The same mistake makes the same error
/// whether it came from `--port`, `ctl port add` or the config file; a
/// config file adds the line and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No port type has this name.
    #[error("unknown port type {kind:?}; one of {known}")]
    UnknownType {
        /// The name given.
        kind: String,
        /// The registry's types, comma-separated.
        known: String,
        /// Where the type was written.
        place: Option<Place>,
    },
    /// A value that does not parse or is out of range.
    #[error("{key}: {message}")]
    Value {
        /// The key.
        key: String,
        /// What is wrong with the value and what is allowed.
        message: String,
        /// Where the value was written.
        place: Option<Place>,
    },
    /// A key that is missing, unknown or repeated.
    #[error("{message}")]
    Spec {
        /// The key the mistake is about.
        key: String,
        /// The whole message.
        message: String,
        /// Where to point: the key, or the port's type.
        place: Option<Place>,
    },
}

impl SpecError {
    /// The key the error is about (`type` for an unknown type).
    pub fn key(&self) -> &str {
        match self {
            SpecError::UnknownType { .. } => "type",
            SpecError::Value { key, .. } | SpecError::Spec { key, .. } => key,
        }
    }

    /// Where the mistake was written, if in a file.
    pub fn place(&self) -> Option<Place> {
        match self {
            SpecError::UnknownType { place, .. }
            | SpecError::Value { place, .. }
            | SpecError::Spec { place, .. } => *place,
        }
    }

    /// The message without the key, for a config file that names the
    /// field itself.
    pub fn message(&self) -> String {
        match self {
            SpecError::Value { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// One value as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    /// The key: as the source spells it until the registry has checked
    /// it, then as `--port` spells it.
    pub key: String,
    /// The value as text.
    pub value: String,
    /// Where it was written.
    pub place: Option<Place>,
}

/// The values given for one port, in order, for its builder to take.
#[derive(Debug, Clone)]
pub struct Values {
    kind: String,
    place: Option<Place>,
    yaml: bool,
    given: Vec<Given>,
}

impl Values {
    /// No values yet for a `--port` spec of type `kind`.
    pub fn new(kind: &str, place: Option<Place>) -> Values {
        Values {
            kind: kind.to_string(),
            place,
            yaml: false,
            given: Vec::new(),
        }
    }

    /// No values yet for a config file's port of type `kind`, written at
    /// `place`; its keys are spelled as the file spells them.
    pub fn new_yaml(kind: &str, place: Option<Place>) -> Values {
        Values {
            yaml: true,
            ..Values::new(kind, place)
        }
    }

    /// The key as this source spells it (`remotes` for `remote` in YAML).
    pub fn spelling(&self, key: &Key) -> &'static str {
        if self.yaml {
            key.yaml_name()
        } else {
            key.name
        }
    }

    /// Renames a given key from its spelling to the key's name.
    pub(super) fn given_mut(&mut self) -> &mut [Given] {
        &mut self.given
    }

    /// Adds a value; `key` as the source spells it.
    pub fn push(&mut self, key: &str, value: &str, place: Option<Place>) {
        self.given.push(Given {
            key: key.to_string(),
            value: value.to_string(),
            place,
        });
    }

    /// The port's type, as given.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Where the type was written.
    pub fn place(&self) -> Option<Place> {
        self.place
    }

    /// Everything given, in order.
    pub fn given(&self) -> &[Given] {
        &self.given
    }

    /// Whether `key` was given.
    pub fn has(&self, key: &Key) -> bool {
        self.given.iter().any(|g| g.key == key.name)
    }

    /// Takes the first value of `key`.
    pub fn take(&mut self, key: &Key) -> Option<Given> {
        let i = self.given.iter().position(|g| g.key == key.name)?;
        Some(self.given.remove(i))
    }

    /// Takes `key`'s value; missing is an error (normally caught before
    /// the builder runs, by [`Need::Required`]).
    pub fn need(&mut self, key: &Key) -> Result<Given, SpecError> {
        let e = missing(self, key);
        self.take(key).ok_or(e)
    }

    /// Takes and parses `key`'s value; a parse error names the key.
    pub fn parse<T>(
        &mut self,
        key: &Key,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, SpecError> {
        let spelled = self.spelling(key);
        self.take(key).map(|g| value_of(spelled, &g, f)).transpose()
    }

    /// Takes and parses a value `key` must have.
    pub fn parse_needed<T>(
        &mut self,
        key: &Key,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, SpecError> {
        let g = self.need(key)?;
        value_of(self.spelling(key), &g, f)
    }

    /// Takes and parses every value of a repeatable `key`.
    pub fn parse_all<T>(
        &mut self,
        key: &Key,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, SpecError> {
        let mut out = Vec::new();
        let spelled = self.spelling(key);
        while let Some(g) = self.take(key) {
            out.push(value_of(spelled, &g, &f)?);
        }
        Ok(out)
    }

    /// Takes an on/off `key`, `default` when absent.
    pub fn on_off(&mut self, key: &Key, default: bool) -> Result<bool, SpecError> {
        Ok(self
            .parse(key, crate::values::parse_on_off)?
            .unwrap_or(default))
    }
}

fn value_of<T>(
    spelled: &str,
    g: &Given,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, SpecError> {
    f(&g.value).map_err(|message| SpecError::Value {
        key: spelled.to_string(),
        message,
        place: g.place,
    })
}

/// The error for a required key left out.
pub fn missing(values: &Values, key: &Key) -> SpecError {
    let what = if key.many { "at least one " } else { "" };
    SpecError::Spec {
        key: values.spelling(key).to_string(),
        message: format!("a {} port needs {what}{}", values.kind(), key.name),
        place: values.place(),
    }
}

/// The error for not exactly one of `keys`.
pub fn one_of(values: &Values, keys: &[&Key]) -> SpecError {
    let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
    SpecError::Spec {
        key: keys
            .first()
            .map(|k| values.spelling(k))
            .unwrap_or_default()
            .to_string(),
        message: format!(
            "a {} port needs exactly one of {}",
            values.kind(),
            names.join(" or ")
        ),
        place: values.place(),
    }
}

/// One port type.
#[derive(Debug)]
pub struct PortType {
    /// What `--port` and `type:` call it.
    pub name: &'static str,
    /// One line for help text.
    pub summary: &'static str,
    /// The keys it takes besides `name`.
    pub keys: &'static [Key],
    /// `None`: a `--port` type; otherwise the flags that give such a port
    /// on the command line instead.
    pub flag: Option<&'static str>,
    /// A config file may give its ports VLANs (`vlan:`, `tagged:`); a unix
    /// port's clients are ports of their own and get them by name.
    pub vlans: bool,
    /// Builds the configuration from checked values.
    pub build: fn(&mut Values, Name) -> Result<Built, SpecError>,
}

/// A port's name: the one given, or `TYPE<index>`.
#[derive(Debug, Clone)]
pub struct Name {
    /// `name=`, if given.
    pub given: Option<String>,
    /// The automatic name.
    pub default: String,
}

impl Name {
    /// The given name or the automatic one.
    pub fn get(self) -> String {
        self.given.unwrap_or(self.default)
    }
}
