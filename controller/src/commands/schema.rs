//! `backstop schema`: the feature schema, as a table or JSON.

use anyhow::Result;

#[expect(
    clippy::unnecessary_wraps,
    reason = "every verb returns Result<exit code> for the one dispatch in main.rs"
)]
pub fn run(json: bool) -> Result<i32> {
    if json {
        println!("{}", backstop_controller::schema::to_json());
    } else {
        print!("{}", backstop_controller::schema::to_table());
    }
    Ok(0)
}
