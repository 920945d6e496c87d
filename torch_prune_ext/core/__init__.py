"""The small core every method builds on: targets, masks, schedules, scoring helpers, reports."""
