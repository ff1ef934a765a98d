//! What to print when a command line does not parse, and the exit code.

/// A command line that does not parse: what to print and the exit code.
#[derive(Debug)]
pub struct Usage {
    /// Text for the user.
    pub message: String,
    /// 0 for --help/--version, 2 for errors.
    pub code: i32,
    /// Print on stdout (help) rather than stderr (errors).
    pub stdout: bool,
}

impl Usage {
    /// A usage error.
    pub fn error(message: impl Into<String>) -> Usage {
        Usage {
            message: message.into(),
            code: 2,
            stdout: false,
        }
    }

    /// Help or version text.
    pub fn info(message: impl Into<String>) -> Usage {
        Usage {
            message: message.into(),
            code: 0,
            stdout: true,
        }
    }
}

impl From<clap::Error> for Usage {
    fn from(e: clap::Error) -> Usage {
        let code = e.exit_code();
        Usage {
            message: e.render().to_string(),
            code,
            stdout: code == 0,
        }
    }
}
