//! `backstop schema`: the feature schema, as a table or JSON.

use anyhow::Result;

pub fn run(json: bool) -> Result<i32> {
    if json {
        println!("{}", backstop_controller::schema::to_json());
    } else {
        print!("{}", backstop_controller::schema::to_table());
    }
    Ok(0)
}
