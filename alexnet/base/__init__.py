"""The bottom layer: the one exception type a user sees (`errors`) and files written whole or not at all
(`files`). Imports nothing of the package."""
