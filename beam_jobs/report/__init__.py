"""The EDA report of `python -m beam_jobs.eda`: figures (`figures`), the HTML page (`page`), and a
headless-Chromium check that the page loads (`browser`)."""
