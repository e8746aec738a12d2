//! Splitting a command line into an argument vector with POSIX shell quoting rules, without
//! running a shell. Nothing is expanded: `$VAR`, globs, `;`, `|` and redirections are
//! ordinary characters, so no value can inject a second command.
//!
//! Rules (the quoting subset of POSIX `sh`, section 2.2 of the Shell Command Language):
//! - Unquoted whitespace separates words.
//! - A backslash outside quotes keeps the next character literally; a backslash before a
//!   newline joins the lines.
//! - Single quotes keep every character up to the next single quote literally.
//! - Inside double quotes a backslash escapes only `"`, `\`, `$`, `` ` `` and newline, and
//!   stays a backslash before any other character.
//! - Adjacent quoted and unquoted parts join into one word, and `''` is an empty word.

/// Splits `line` into words. Fails on an unterminated quote or a trailing backslash.
pub fn split_command_line(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // True once the current word has started, so that `''` yields an empty word.
    let mut in_word = false;
    let mut chars = line.chars();

    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err(format!("trailing backslash in command `{line}`; remove it or escape it as \\\\")),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(inner) => word.push(inner),
                        None => return Err(format!("unterminated single quote in command `{line}`; close it with '")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(escaped @ ('"' | '\\' | '$' | '`')) => word.push(escaped),
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(format!("unterminated double quote in command `{line}`; close it with \"")),
                        },
                        Some(inner) => word.push(inner),
                        None => return Err(format!("unterminated double quote in command `{line}`; close it with \"")),
                    }
                }
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split_command_line;

    fn split(line: &str) -> Vec<String> {
        split_command_line(line).unwrap()
    }

    #[test]
    fn plain_words() {
        assert_eq!(split("python3  train.py --epochs 3"), ["python3", "train.py", "--epochs", "3"]);
        assert_eq!(split("  \t\n"), Vec::<String>::new());
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(split(r#"echo 'a b' 'x\y' '$HOME'"#), ["echo", "a b", r"x\y", "$HOME"]);
    }

    #[test]
    fn double_quotes_escape_some() {
        assert_eq!(split(r#"echo "a \"b\" \\ \$x \n""#), ["echo", r#"a "b" \ $x \n"#]);
    }

    #[test]
    fn backslash_outside_quotes() {
        assert_eq!(split(r"a\ b c\\d \'"), ["a b", r"c\d", "'"]);
        assert_eq!(split("a\\\nb"), ["ab"]);
    }

    #[test]
    fn adjacent_parts_join() {
        assert_eq!(split(r#"--name='x y'"z"w"#), [r#"--name=x yzw"#]);
        assert_eq!(split("a '' b"), ["a", "", "b"]);
    }

    #[test]
    fn shell_operators_stay_literal() {
        assert_eq!(split("echo x; rm -rf / | cat > out"), ["echo", "x;", "rm", "-rf", "/", "|", "cat", ">", "out"]);
        assert_eq!(split("'; rm -rf ~'"), ["; rm -rf ~"]);
    }

    #[test]
    fn unterminated_quotes_rejected() {
        assert!(split_command_line("echo 'abc").unwrap_err().contains("single quote"));
        assert!(split_command_line("echo \"abc").unwrap_err().contains("double quote"));
        assert!(split_command_line("echo \"abc\\").unwrap_err().contains("double quote"));
        assert!(split_command_line("echo abc\\").unwrap_err().contains("trailing backslash"));
    }
}
