"""The outbound dialer: calls now, calls on a schedule, retries of unanswered calls."""
