use anyhow::Result;

pub fn prepare() -> Result<()> {
    Ok(())
}

pub fn demo() -> Result<()> {
    Ok(())
}
