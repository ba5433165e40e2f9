"""Entry points: what the Lambda functions and state machines call (event parsing, settings, wiring),
and the retry contract the state machines are built from."""
