"""The engine every task runs on, and the one place for the names Temporal keeps."""
