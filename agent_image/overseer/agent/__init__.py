"""The agent runtime that runs in each Goal pod."""
