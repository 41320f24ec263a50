//! One file per subcommand: each calls the library and adds context.

pub mod bench_decide;
pub mod bench_predict;
pub mod corpus;
pub mod crossval;
pub mod deploy;
pub mod enroll;
pub mod eval;
pub mod exec;
pub mod init;
pub mod learn;
pub mod manifest;
pub mod model;
pub mod read;
pub mod replay;
pub mod report;
pub mod revoke;
pub mod schema;
pub mod serve;
pub mod train;

/// An error that carries its own exit code (2: bad configuration).
#[derive(Debug)]
pub struct Exit(pub i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Open the store of a data directory, after checking (and narrowing) the
/// directory's modes. Reading commands (`create` false) create nothing.
pub async fn open_store(
    data: &std::path::Path,
    database: Option<String>,
    create: bool,
) -> anyhow::Result<backstop_controller::store::Store> {
    let d = data.to_path_buf();
    if create || d.exists() {
        tokio::task::spawn_blocking(move || backstop_controller::private::data_dir(&d))
            .await?
            .map_err(|e| anyhow::Error::new(e).context(Exit(2)))?;
    }
    let url = database.unwrap_or_else(|| backstop_controller::store::default_url(data));
    backstop_controller::store::Store::open(&url, create)
        .await
        .map_err(|e| anyhow::Error::new(e).context(Exit(2)))
}
