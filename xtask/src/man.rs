//! The man pages: clap_mangen's sections, with the SYNOPSIS written here
//! (clap_mangen 0.2 prints `[-p ]` for an option's value, dropping its
//! name) and FILES, ENVIRONMENT, EXIT STATUS and EXAMPLES appended from
//! [`crate::pages`].

use crate::pages::{Block, Section};
use clap::{Arg, ArgAction, Command};

/// The whole page of `command`, in roff.
pub fn render(command: &Command, extra: &[Section]) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    page.extend_from_slice(synopsis(command).as_bytes());
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    for section in extra {
        page.extend_from_slice(render_section(section).as_bytes());
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// `.SH SYNOPSIS` as ssh(1) writes it: `[-p PORT]`, `[-v]...`,
/// `[-c|--command COMMAND]`, then the operands; an option and its value are
/// joined by an unbreakable space, so a line never ends between them.
pub fn synopsis(command: &Command) -> String {
    let mut words = vec![bold(command.get_name())];
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        if arg.is_positional() {
            continue;
        }
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!(
                "{}|{}",
                bold(&format!("-{short}")),
                bold(&format!("--{long}"))
            ),
            (Some(short), None) => bold(&format!("-{short}")),
            (None, Some(long)) => bold(&format!("--{long}")),
            (None, None) => continue,
        };
        let value = value_names(arg)
            .map(|v| format!("\\ {}", italic(&v)))
            .unwrap_or_default();
        let repeat = if matches!(arg.get_action(), ArgAction::Count) {
            "..."
        } else {
            ""
        };
        words.push(format!("[{flag}{value}]{repeat}"));
    }
    for arg in command.get_positionals().filter(|a| !a.is_hide_set()) {
        let name = value_names(arg).unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        let (open, close) = if arg.is_required_set() {
            ("", "")
        } else {
            ("[", "]")
        };
        let many = if arg.get_num_args().is_some_and(|n| n.max_values() > 1) {
            "..."
        } else {
            ""
        };
        words.push(format!("{open}{}{close}{many}", italic(&name)));
    }
    // Not hyphenated nor justified: option names stay whole.
    format!(".SH SYNOPSIS\n.nh\n.ad l\n{}\n.ad\n.hy\n", words.join(" "))
}

/// The value names an option takes (`PORT`, `KEY=VALUE`), if it takes any.
fn value_names(arg: &Arg) -> Option<String> {
    let takes = arg.get_num_args().is_some_and(|n| n.takes_values())
        || matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
    if !takes {
        return None;
    }
    Some(match arg.get_value_names() {
        Some(names) => names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        None => arg.get_id().as_str().to_uppercase(),
    })
}

fn render_section(section: &Section) -> String {
    let mut out = format!(".SH \"{}\"\n", section.title);
    for block in section.blocks {
        match block {
            Block::Para(text) => out.push_str(&format!(".PP\n{}\n", inline(text))),
            Block::Item(tag, text) => {
                out.push_str(&format!(".TP\n{}\n{}\n", inline(tag), inline(text)))
            }
            Block::Example(what, command) => {
                out.push_str(&format!(".PP\n{}\n.PP\n.RS 4\n.nf\n", inline(what)));
                for line in command.lines() {
                    out.push_str(&format!("\\&{}\n", escape(line)));
                }
                out.push_str(".fi\n.RE\n");
            }
        }
    }
    out
}

/// Escapes text for roff, with `` `word` `` set in bold, and keeps a line
/// from starting with a control character.
fn inline(text: &str) -> String {
    let mut out = String::from("\\&");
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&bold(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

fn bold(text: &str) -> String {
    format!("\\fB{}\\fR", escape(text))
}

fn italic(text: &str) -> String {
    format!("\\fI{}\\fR", escape(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options show their value names, counted flags their `...`, and the
    /// operands follow, as in ssh(1)'s synopsis.
    #[test]
    fn synopsis_names_option_values() {
        let synopsis = synopsis(&rsh_cli::client::command());
        for expected in [
            "[\\fB\\-c\\fR|\\fB\\-\\-command\\fR\\ \\fICOMMAND\\fR]",
            "[\\fB\\-p\\fR\\ \\fIPORT\\fR]",
            "[\\fB\\-o\\fR\\ \\fIKEY=VALUE\\fR]",
            "[\\fB\\-v\\fR]...",
            "[\\fB\\-\\-gather\\fR]",
            "[\\fIDEST\\fR] [\\fICOMMAND\\fR]...",
        ] {
            assert!(synopsis.contains(expected), "{expected} not in {synopsis}");
        }
        assert!(!synopsis.contains(" ]"), "{synopsis}");
    }

    #[test]
    fn pages_have_the_sections_people_look_for() {
        for command in [rsh_cli::client::command(), rsh_cli::server::command()] {
            let name = command.get_name().to_owned();
            let page = render(&command, crate::pages::sections(&name)).expect("render");
            let page = String::from_utf8(page).expect("utf-8");
            for title in [
                "SYNOPSIS",
                "OPTIONS",
                "\"FILES\"",
                "\"ENVIRONMENT\"",
                "\"EXIT STATUS\"",
                "\"EXAMPLES\"",
            ] {
                assert!(
                    page.contains(&format!(".SH {title}")),
                    "{name}.1 lacks {title}"
                );
            }
        }
    }
}
