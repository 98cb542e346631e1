"""Other ways to run a round than the in-process local loop (flower/: Flower's ClientApp and ServerApp)."""
