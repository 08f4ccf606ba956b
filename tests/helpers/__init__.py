"""What the tests share, none of it a fixture (those are in tests/conftest.py): paths, the CLI
driver, configs, models and files built for tests, and readers of what runs leave behind."""
