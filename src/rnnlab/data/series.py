"""Time series from CSV files: read a time column and numeric columns, infer the frequency,
find and fill gaps, step the calendar forward, and encode calendar positions as features.

Reading rules (``read_series``); every error is a one-line DataError naming the file and, where
there is one, the 1-based line of the CSV (the header is line 1, the first data row line 2):

- The file is strict UTF-8 (a leading byte-order mark is dropped) read with the ``csv`` module:
  a header row is required, quoted fields are fine, blank lines are skipped, and every row has as
  many fields as the header. An empty file, or a header without rows, is an error.
- Time column: ``time`` names it; otherwise it is the first column whose every non-empty value is
  a date. Dates are YYYY, YYYY-MM, YYYY-MM-DD, YYYY-MM-DD HH:MM or YYYY-MM-DD HH:MM:SS, with 'T'
  or a space before the time, and '/' instead of '-' (YYYY/MM/DD). A time that does not parse,
  or an empty one, is an error. Times must increase: a repeated time or a time earlier than the
  row before it is an error (the file is never sorted silently).
- A column is numeric when it has a value and at least half of its non-missing values parse as
  numbers, so a numeric column with a few junk values is still the target by default and its junk
  is reported line by line instead of the column being passed over.
- Target: ``target`` names it; by default it is the only numeric column besides the time and the
  covariates. Several numeric columns and no ``target`` is an error listing them.
- Covariates: the named columns, numeric, read with the same rules as the target.
- Values: an empty cell, NA, nan or null (any case) is missing. Text that is not a number
  (such as '?0.2' or '1_000') and infinities are always errors: nothing guesses what they meant.
  Missing values are an error unless ``fill`` is "ffill" or "interpolate".
- Frequency: the most common step between times, which must account for more than half of the
  steps: a minute, an hour, a day, a business day (Monday to Friday: 'B' when no time falls on
  a weekend and some Friday is followed by a Monday), a week, a calendar month (same day of month,
  or month ends), a quarter or a year. Fewer than 3 rows, or no step covering most of them, is an
  error, and so is a time off that grid (a daily series with one row at noon).
- Gaps: a step longer than one period (for 'B' a weekend is not a gap; a missing weekday is).
  ``fill`` decides what happens to gaps and to missing values:

  ====================  ===============================  ====================================
  fill                  gaps                             missing values
  ====================  ===============================  ====================================
  None                  error                            error
  "none"                kept as they are                 error (nothing to fill them with)
  "ffill"               missing times inserted           the previous value (not in row 1)
  "interpolate"         missing times inserted           linear in time between neighbours
                                                         (not in the first or last row)
  ====================  ===============================  ====================================

  ``Series.filled`` says in words what was done.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from rnnlab.data.text import DataError, PathLike, read_utf8

FILLS = ("none", "ffill", "interpolate")
FREQS = ("min", "H", "D", "B", "W", "M", "Q", "Y")

FREQ_WORDS = {"min": "minutely", "H": "hourly", "D": "daily", "B": "business-daily",
              "W": "weekly", "M": "monthly", "Q": "quarterly", "Y": "yearly"}
_SECONDS = {"min": 60, "H": 3600, "D": 86400, "W": 7 * 86400}  # fixed-length periods
_MONTHS = {"M": 1, "Q": 3, "Y": 12}  # calendar periods, in months
_SEASON = {"min": None, "H": 24, "D": 7, "B": 5, "W": 52, "M": 12, "Q": 4, "Y": None}

_MISSING = ("", "na", "nan", "null")  # compared in lower case
_SHOW = 5  # how many lines or times an error lists before "and N more"

# YYYY[-MM[-DD[(T| )HH:MM[:SS]]]], with '/' allowed instead of '-' (the same one throughout).
_DATE = re.compile(r"(\d{4})(?:([-/])(\d{2})(?:\2(\d{2})"
                   r"(?:([T ])(\d{2}):(\d{2})(?::(\d{2}))?)?)?)?")
_DAY = 86400


@dataclass(eq=False)
class Series:
    """A univariate target with optional covariates on a regular time grid.

    ``times`` (T,) datetime64[s]; ``values`` (T,) float64; ``covariates`` (T, C) float64 with
    ``covariate_names`` (C may be 0); ``time_format`` writes times back as the file wrote them;
    ``filled`` lists, in words, the rows inserted and the values filled (empty if none).
    """

    path: str
    time_name: str
    time_format: str
    times: np.ndarray
    freq: str
    target_name: str
    values: np.ndarray
    covariate_names: list[str]
    covariates: np.ndarray
    filled: list[str]

    def __len__(self) -> int:
        return len(self.times)

    def head(self, n: int) -> Series:
        """The first ``n`` rows as a new Series (to cut off a holdout at the end)."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 0 <= n <= len(self):
            raise ValueError(f"head: expected an integer 0 <= n <= {len(self)}, got {n!r}")
        return Series(self.path, self.time_name, self.time_format, self.times[:n].copy(),
                      self.freq, self.target_name, self.values[:n].copy(),
                      list(self.covariate_names), self.covariates[:n].copy(), list(self.filled))

    def describe(self) -> str:
        """One line: file, target, length, frequency, time range and covariates."""
        span = ""
        if len(self):
            first, last = format_times(self.times[[0, -1]], self.time_format)
            span = f" {first}..{last}"
        covs = ", ".join(self.covariate_names) if self.covariate_names else None
        return (f"{Path(self.path).name}: {self.target_name}, {len(self)} {FREQ_WORDS[self.freq]} "
                f"values{span} ({f'covariates {covs}' if covs else 'no covariates'})")


# ----------------------------------------------------------------------------- dates


def _parse_time(text: str) -> tuple[datetime, str] | None:
    """A date as a datetime and the strftime format that writes it back, or None."""
    m = _DATE.fullmatch(text)
    if m is None:
        return None
    year, sep, month, day, t, hour, minute, second = m.groups()
    try:
        when = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                        int(minute or 0), int(second or 0))
    except ValueError:  # 2019-02-30, 1990-13, 24:00
        return None
    fmt = "%Y"
    if month:
        fmt += f"{sep}%m"
    if day:
        fmt += f"{sep}%d"
    if hour:
        fmt += f"{t}%H:%M" + (":%S" if second else "")
    return when, fmt


def format_times(times: np.ndarray, fmt: str) -> list[str]:
    """Times (datetime64, any unit down to seconds) written with a strftime format."""
    return [t.strftime(fmt) for t in np.asarray(times).astype("datetime64[s]").astype(object)]


def _days(t: np.ndarray) -> np.ndarray:
    return t.astype("datetime64[D]")


def _month_index(t: np.ndarray) -> np.ndarray:
    """Months since 1970-01 (int64)."""
    return t.astype("datetime64[M]").astype(np.int64)


def _day_of_month(t: np.ndarray) -> np.ndarray:
    """1..31."""
    return (_days(t) - t.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1


def _month_length(month_index: np.ndarray) -> np.ndarray:
    start = np.asarray(month_index, dtype=np.int64).astype("datetime64[M]")
    return ((start + 1).astype("datetime64[D]") - start.astype("datetime64[D]")).astype(np.int64)


def _is_month_end(t: np.ndarray) -> np.ndarray:
    return _day_of_month(t) == _month_length(_month_index(t))


def _second_of_day(t: np.ndarray) -> np.ndarray:
    return (t - _days(t)).astype("timedelta64[s]").astype(np.int64)


def _weekday(t: np.ndarray) -> np.ndarray:
    """Monday 0 .. Sunday 6 (1970-01-01 was a Thursday)."""
    return (_days(t).astype(np.int64) + 3) % 7


def _add_months(t: np.datetime64, k: np.ndarray) -> np.ndarray:
    """``t`` moved by ``k`` months: a month end stays a month end (Jan 31 -> Feb 28 -> Mar 31),
    any other day of month is kept, clamped to the length of the month."""
    t = np.asarray(t, dtype="datetime64[s]").reshape(1)
    months = _month_index(t) + np.asarray(k, dtype=np.int64)
    length = _month_length(months)
    day = length if _is_month_end(t)[0] else np.minimum(_day_of_month(t), length)
    starts = months.astype("datetime64[M]").astype("datetime64[D]")
    return (starts + (day - 1)).astype("datetime64[s]") + _second_of_day(t)


# ----------------------------------------------------------------------------- frequency


def _check_freq(freq: str) -> None:
    if freq not in FREQS:
        raise ValueError(f"expected a frequency in {', '.join(FREQS)}, got {freq!r}")


def _periods(times: np.ndarray, freq: str) -> np.ndarray:
    """(T-1,) int64: how many periods of ``freq`` each step spans; 0 where a step is off the grid
    (not a whole number of periods, or not landing on the same time of day / day of month)."""
    a, b = times[:-1], times[1:]
    if freq in _SECONDS:
        step = (b - a).astype(np.int64)
        return np.where(step % _SECONDS[freq] == 0, step // _SECONDS[freq], 0)
    same_clock = _second_of_day(a) == _second_of_day(b)
    if freq == "B":
        weekdays = (_weekday(a) < 5) & (_weekday(b) < 5)
        count = np.busday_count(_days(a), _days(b)) if len(a) else np.zeros(0, np.int64)
        return np.where(weekdays & same_clock, count, 0)
    months = _month_index(b) - _month_index(a)
    same_day = (_day_of_month(a) == _day_of_month(b)) | (_is_month_end(a) & _is_month_end(b))
    per = _MONTHS[freq]
    return np.where(same_clock & same_day & (months % per == 0), months // per, 0)


def _describe_step(seconds: int) -> str:
    for unit, size in (("day", _DAY), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def infer_frequency(times: np.ndarray) -> str:
    """The frequency (one of FREQS) of increasing ``times`` (T,) datetime64: the period that is
    the step between most neighbours, provided it is more than half of the T-1 steps.

    A daily grid is 'B' when no time is a Saturday or Sunday and some step goes Friday to Monday.
    Raises DataError for fewer than 3 times or no such period.
    """
    times = np.asarray(times).astype("datetime64[s]")
    if times.ndim != 1 or len(times) < 3:
        raise DataError(f"expected at least 3 times to infer a frequency, got {times.size}")
    counts = {freq: int(np.count_nonzero(_periods(times, freq) == 1))
              for freq in FREQS if freq != "B"}
    if not (_weekday(times) >= 5).any():
        one_business_day = _periods(times, "B") == 1
        weekend = one_business_day & ((times[1:] - times[:-1]).astype(np.int64) > _DAY)
        if weekend.any():
            counts["B"] = int(np.count_nonzero(one_business_day))
    best = max(counts, key=lambda f: (counts[f], f == "B"))  # B refines D when both count
    steps = len(times) - 1
    if 2 * counts[best] <= steps:
        raw, seen = np.unique((times[1:] - times[:-1]).astype(np.int64), return_counts=True)
        common = int(raw[np.argmax(seen)])
        raise DataError(
            f"expected regularly spaced times (one minute, hour, day, business day, week, month, "
            f"quarter or year apart), got no step shared by most of the {steps} steps "
            f"(the most common, {_describe_step(common)}, is {int(seen.max())} of them)")
    return best


def next_times(last: np.datetime64, freq: str, n: int) -> np.ndarray:
    """(n,) datetime64[s]: the n times after ``last`` on the grid of ``freq``.

    Business days skip Saturdays and Sundays (after a weekend ``last`` comes Monday). Monthly,
    quarterly and yearly steps keep the day of month counted from ``last`` (month starts stay
    month starts), except that a ``last`` on the final day of its month gives month ends.
    The time of day is kept.
    """
    _check_freq(freq)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"next_times: expected an integer n >= 0, got {n!r}")
    last = np.datetime64(last, "s")
    k = np.arange(1, n + 1, dtype=np.int64)
    if freq in _SECONDS:
        return last + k * np.timedelta64(_SECONDS[freq], "s")
    if freq == "B":
        days = np.busday_offset(last.astype("datetime64[D]"), k, roll="backward")
        return days.astype("datetime64[s]") + _second_of_day(np.array([last]))[0]
    return _add_months(last, k * _MONTHS[freq])


def season_length(freq: str) -> int | None:
    """The usual seasonal period in steps: M 12, Q 4, D 7, B 5, H 24, W 52; None for min and Y."""
    _check_freq(freq)
    return _SEASON[freq]


# ----------------------------------------------------------------------------- calendar features


def _calendar_positions(times: np.ndarray, freq: str) -> list[tuple[np.ndarray, float]]:
    """(position k, period P) for each calendar cycle used for ``freq``."""
    t = np.asarray(times).astype("datetime64[s]")
    month = _month_index(t) % 12  # 0 = January
    day_of_year = (_days(t) - t.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
    hour = _second_of_day(t) // 3600
    minute = _second_of_day(t) // 60 % 60
    weekday = _weekday(t)  # 0 = Monday
    return {
        "M": [(month, 12)],
        "Q": [(month // 3, 4)],
        "D": [(day_of_year, 365.25), (weekday, 7)],
        "B": [(day_of_year, 365.25), (weekday, 5)],
        "W": [(day_of_year / 7, 365.25 / 7)],
        "H": [(hour, 24), (weekday, 7)],
        "min": [(minute, 60), (hour, 24)],
        "Y": [],
    }[freq]


def calendar_features(times: np.ndarray, freq: str) -> np.ndarray:
    """(T, F) float64: a sin/cos pair, sin(2*pi*k/P) then cos(2*pi*k/P), per calendar cycle.

    Positions k count from 0: month 0 = January, quarter 0 = January-March, day of year 0 =
    January 1st, weekday 0 = Monday, hour 0-23, minute 0-59. Columns by frequency:

    - M: month of year (P 12);  Q: quarter of year (P 4);
    - D: day of year (P 365.25), day of week (P 7);
    - B: day of year (P 365.25), day of week (P 5: Friday is next to Monday, weekends never occur);
    - W: week of year as day of year / 7 (P 365.25 / 7, so 53-week years need no special case);
    - H: hour of day (P 24), day of week (P 7);  min: minute of hour (P 60), hour of day (P 24);
    - Y: none (F = 0).
    """
    _check_freq(freq)
    columns = []
    for k, period in _calendar_positions(times, freq):
        angle = 2 * np.pi * np.asarray(k, dtype=np.float64) / period
        columns += [np.sin(angle), np.cos(angle)]
    if not columns:
        return np.zeros((len(times), 0))
    return np.stack(columns, axis=1)


def calendar_size(freq: str) -> int:
    """F, the number of calendar_features columns for ``freq``."""
    _check_freq(freq)
    return 2 * len(_calendar_positions(np.zeros(0, dtype="datetime64[s]"), freq))


# ----------------------------------------------------------------------------- reading: table


def _listing(items: Sequence[str], show: int = _SHOW) -> str:
    """'a, b, c' or 'a, b, c, d, e and 7 more'."""
    shown = ", ".join(items[:show])
    return shown + (f" and {len(items) - show} more" if len(items) > show else "")


def _read_table(path: PathLike) -> tuple[list[str], list[list[str]], list[int]]:
    """The header (names stripped), the data rows and the 1-based line each row starts on."""
    text = read_utf8(path, "CSV").removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{path}: expected a CSV header row and data rows, got an empty file")
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    header: list[str] | None = None
    rows, lines = [], []
    start = 1
    try:
        for row in reader:
            if len(row) <= 1 and not "".join(row).strip():
                pass  # a blank line
            elif header is None:
                header = [name.strip() for name in row]
            elif len(row) != len(header):
                raise DataError(f"{path}, line {start}: expected {len(header)} fields as in the "
                                f"header, got {len(row)}")
            else:
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: expected CSV, got {e}") from None
    assert header is not None  # the text is not blank, so some row is not blank
    if len(header) < 2:
        raise DataError(f"{path}: expected a time column and a value column, got the single "
                        f"column {header[0]!r}")
    dup = next((name for name in header if header.count(name) > 1), None)
    if dup is not None:
        raise DataError(f"{path}, line 1: expected distinct column names, got {dup!r} twice")
    if not rows:
        raise DataError(f"{path}: expected data rows after the header, got none")
    return header, rows, lines


def csv_columns(path: PathLike) -> list[str]:
    """The column names of a CSV file, as :func:`read_series` reads its header."""
    return _read_table(path)[0]


def _columns(header: Sequence[str]) -> str:
    return ", ".join(header)


# ----------------------------------------------------------------------------- reading: time


def _is_time_column(cells: Sequence[str]) -> bool:
    present = [c for c in cells if c]
    return bool(present) and all(_parse_time(c) is not None for c in present)


def _find_time_column(path: PathLike, header: list[str], cells: list[list[str]],
                      time: str | None) -> int:
    if time is not None:
        if time not in header:
            raise DataError(f"{path}: expected a time column named {time!r}, got the columns "
                            f"{_columns(header)}")
        return header.index(time)
    for j, column in enumerate(cells):
        if _is_time_column(column):
            return j
    raise DataError(f"{path}: expected a time column (dates such as 1949-01 or 2018-01-31), got "
                    f"none among columns {_columns(header)}; name it with --time COL")


def _parse_times(path: PathLike, name: str, cells: list[str],
                 lines: list[int]) -> tuple[np.ndarray, str]:
    """(T,) datetime64[s] and the most precise format among the cells (ties: the first)."""
    whens, fmt = [], "%Y"
    for cell, line in zip(cells, lines, strict=True):
        parsed = _parse_time(cell)
        if parsed is None:
            got = repr(cell) if cell else "an empty cell"
            raise DataError(f"{path}, line {line}: expected a time in column {name!r} (such as "
                            f"1949-01, 2018-01-31 or 2018-01-31 12:00), got {got}")
        whens.append(parsed[0])
        if len(parsed[1]) > len(fmt):
            fmt = parsed[1]
    return np.array(whens, dtype="datetime64[s]"), fmt


def _check_order(path: PathLike, times: np.ndarray, lines: list[int], fmt: str) -> None:
    """Times must strictly increase: a repeat or a step back is an error naming the lines."""
    bad = np.flatnonzero(times[1:] <= times[:-1])
    if not len(bad):
        return
    i = int(bad[0])
    before, after = format_times(times[i:i + 2], fmt)
    if times[i] == times[i + 1]:
        raise DataError(f"{path}: expected one row per time, got {before} on lines {lines[i]} "
                        f"and {lines[i + 1]}")
    raise DataError(f"{path}, line {lines[i + 1]}: expected times in increasing order, got "
                    f"{after} after {before} on line {lines[i]}; sort the file by time")


def _off_grid(path: PathLike, times: np.ndarray, lines: list[int], fmt: str, freq: str,
              periods: np.ndarray) -> None:
    bad = np.flatnonzero(periods < 1)
    if len(bad):
        i = int(bad[0])
        before, after = format_times(times[i:i + 2], fmt)
        raise DataError(f"{path}, line {lines[i + 1]}: expected a whole number of "
                        f"{FREQ_WORDS[freq]} steps after {before} on line {lines[i]}, got "
                        f"{after}")


# ----------------------------------------------------------------------------- reading: values


def _is_numeric(cells: Sequence[str]) -> bool:
    present = [c for c in cells if c.lower() not in _MISSING]
    parsed = sum(_number(c) is not None for c in present)
    return bool(present) and 2 * parsed >= len(present)


def _number(cell: str) -> float | None:
    """The float in a cell, or None when it is not a number (float() would take '1_000')."""
    if "_" in cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _choose_target(path: PathLike, header: list[str], cells: list[list[str]], time_col: int,
                   target: str | None, covariates: Sequence[str]) -> int:
    others = [j for j in range(len(header)) if j != time_col and header[j] not in covariates]
    numeric = [header[j] for j in others if _is_numeric(cells[j])]
    if target is None:
        if len(numeric) == 1:
            return header.index(numeric[0])
        if not numeric:
            rest = _columns([header[j] for j in others]) or "no other column"
            raise DataError(f"{path}: expected a numeric column to forecast, got none among "
                            f"{rest}")
        raise DataError(f"{path}: several numeric columns: {_columns(numeric)}; choose one with "
                        f"--target COL")
    if target == header[time_col] or target in covariates:
        role = "time" if target == header[time_col] else "a covariate"
        raise DataError(f"{path}: expected the target to differ from the time column and the "
                        f"covariates, got {target!r}, which is {role}")
    if target not in header or not _is_numeric(cells[header.index(target)]):
        what = "not a column" if target not in header else "not numeric"
        raise DataError(f"{path}: expected --target to name a numeric column "
                        f"({_columns(numeric) or 'there is none'}), got {target!r} ({what})")
    return header.index(target)


def _covariate_columns(path: PathLike, header: list[str], cells: list[list[str]], time_col: int,
                       covariates: Sequence[str]) -> list[int]:
    if isinstance(covariates, str):
        raise ValueError(f"covariates: expected a sequence of column names, got the string "
                         f"{covariates!r}")
    if len(set(covariates)) != len(covariates):
        raise DataError(f"{path}: expected distinct covariates, got {', '.join(covariates)}")
    if not covariates:
        return []
    numeric = [h for j, h in enumerate(header) if j != time_col and _is_numeric(cells[j])]
    for name in covariates:
        if name not in numeric:
            raise DataError(f"{path}: expected covariates among the numeric columns "
                            f"({_columns(numeric) or 'there is none'}), got {name!r}")
    return [header.index(name) for name in covariates]


def _parse_values(cells: list[str]) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """(T,) float64 with NaN where missing, the missing rows, and the (row, cell) of junk:
    text that is not a number, and infinities."""
    values = np.full(len(cells), np.nan)
    missing, junk = [], []
    for i, cell in enumerate(cells):
        if cell.lower() in _MISSING:
            missing.append(i)
            continue
        x = _number(cell)
        if x is None or not np.isfinite(x):
            junk.append((i, cell))
        else:
            values[i] = x
    return values, missing, junk


def _value_problems(name: str, missing: list[int], junk: list[tuple[int, str]],
                    lines: list[int], fill: str | None) -> str | None:
    """'NAME: non-numeric value '?0.2' on line 567; missing value on lines 10, 11', or None."""
    parts = []
    bad = [(i, c) for i, c in junk if _number(c) is None]
    for kind, items in (("non-numeric", bad), ("non-finite", [j for j in junk if j not in bad])):
        if items:
            shown = [f"{c!r} on line {lines[i]}" for i, c in items]
            parts.append(f"{kind} value{'s' if len(items) > 1 else ''} {_listing(shown)}")
    if missing and fill not in ("ffill", "interpolate"):
        many = len(missing) > 1
        shown = [str(lines[i]) for i in missing]
        parts.append(f"missing value{'s' if many else ''} on line{'s' if many else ''} "
                     f"{_listing(shown)}")
    return f"{name}: {'; '.join(parts)}" if parts else None


def _check_values(path: PathLike, problems: list[str], fill: str | None) -> None:
    if not problems:
        return
    text = "; ".join(problems)
    if "missing value" not in text:
        hint = ("" if fill is None or fill == "none"
                else f" (--fill {fill} fills only empty, NA, nan or null cells)")
    elif fill == "none":
        hint = " (--fill none keeps gaps as they are; fill missing values with --fill " \
               "ffill|interpolate)"
    else:
        hint = " (or --fill ffill|interpolate for missing values)"
    raise DataError(f"{path}: {text}; expected numbers{hint}")


# ----------------------------------------------------------------------------- reading: gaps, fill


def _gap_times(times: np.ndarray, freq: str, periods: np.ndarray) -> list[np.ndarray]:
    """For each gap (a step of k > 1 periods), the k-1 missing times, in order."""
    return [next_times(times[i], freq, int(periods[i]) - 1) for i in np.flatnonzero(periods > 1)]


def _gap_phrases(gaps: list[np.ndarray], fmt: str) -> list[str]:
    phrases = []
    for missing in gaps:
        first, last = format_times(missing[[0, -1]], fmt)
        phrases.append(first if len(missing) == 1 else f"{first}..{last} ({len(missing)} times)")
    return phrases


def _check_gaps(path: PathLike, times: np.ndarray, lines: list[int], fmt: str, freq: str,
                periods: np.ndarray, gaps: list[np.ndarray]) -> None:
    if not gaps:
        return
    where = np.flatnonzero(periods > 1)
    shown = [f"{phrase} missing (between lines {lines[i]} and {lines[i + 1]})"
             for phrase, i in zip(_gap_phrases(gaps, fmt), where, strict=True)]
    raise DataError(f"{path}: {len(gaps)} gap{'s' if len(gaps) > 1 else ''} in the time column: "
                    f"{_listing(shown, 3)}; expected consecutive {FREQ_WORDS[freq]} timestamps: "
                    f"fill them with --fill ffill|interpolate, or keep the rows as they are with "
                    f"--fill none")


def _insert_rows(times: np.ndarray, table: np.ndarray, lines: list[int],
                 gaps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
    """Times, (T, K) values (NaN in the new rows) and lines (None for new rows) with the gaps'
    missing times inserted in order."""
    if not gaps:
        return times, table, list(lines)
    new_times = np.concatenate([times, *gaps])
    order = np.argsort(new_times, kind="stable")
    new_table = np.concatenate([table, np.full((len(new_times) - len(times), table.shape[1]),
                                               np.nan)])
    all_lines: list[int | None] = list(lines) + [None] * (len(new_times) - len(times))
    return new_times[order], new_table[order], [all_lines[i] for i in order]


def _fill_column(path: PathLike, name: str, times: np.ndarray, values: np.ndarray,
                 lines: list[int | None], fill: str) -> np.ndarray:
    """``values`` with its NaNs filled by the previous value or by linear interpolation in
    time; a NaN with no neighbour to fill it from is an error."""
    gone = np.isnan(values)
    ends = (0,) if fill == "ffill" else (0, len(values) - 1)
    for end in ends:
        if gone[end]:
            row = "first" if end == 0 else "last"
            how = "nothing earlier to carry forward" if fill == "ffill" else \
                "no value on both sides to interpolate between"
            raise DataError(f"{path}, line {lines[end]}: {name}: expected a value in the {row} "
                            f"row (--fill {fill} has {how}), got a missing value")
    if fill == "ffill":
        source = np.maximum.accumulate(np.where(gone, 0, np.arange(len(values))))
        return values[source]
    seconds = times.astype(np.int64).astype(np.float64)
    out = values.copy()
    out[gone] = np.interp(seconds[gone], seconds[~gone], values[~gone])
    return out


def _fill_report(names: list[str], table: np.ndarray, lines: list[int | None], fill: str,
                 inserted: list[str]) -> list[str]:
    how = "carrying the previous value forward" if fill == "ffill" else \
        "linear interpolation in time"
    report = []
    if inserted:
        report.append(f"inserted {len(inserted)} row{'s' if len(inserted) > 1 else ''} for "
                      f"missing times ({_listing(inserted)})")
    for name, column in zip(names, table.T, strict=True):
        rows = np.flatnonzero(np.isnan(column))
        if not len(rows):
            continue
        new = sum(lines[i] is None for i in rows)
        empty = [str(lines[i]) for i in rows if lines[i] is not None]
        parts = ([f"{new} in inserted rows"] if new else []) + \
            ([f"empty on line{'s' if len(empty) > 1 else ''} {_listing(empty)}"] if empty else [])
        report.append(f"{name}: filled {len(rows)} value{'s' if len(rows) > 1 else ''} by {how} "
                      f"({', '.join(parts)})")
    return report


# ----------------------------------------------------------------------------- reading


def read_series(path: PathLike, time: str | None = None, target: str | None = None,
                covariates: Sequence[str] = (), fill: str | None = None) -> Series:
    """Read a time series from a CSV file (the rules are in the module docstring).

    ``time``, ``target``: column names (None: found as described); ``covariates``: names of
    numeric columns read alongside the target; ``fill``: None, "none", "ffill" or "interpolate".
    Raises FileNotFoundError for a missing file, ValueError for a bad ``fill``, and DataError
    for anything wrong in the file.
    """
    if fill is not None and fill not in FILLS:
        raise ValueError(f"fill: expected one of {', '.join(FILLS)} (or None), got {fill!r}")
    header, rows, lines = _read_table(path)
    cells = [[row[j].strip() for row in rows] for j in range(len(header))]
    time_col = _find_time_column(path, header, cells, time)
    cov_cols = _covariate_columns(path, header, cells, time_col, covariates)
    target_col = _choose_target(path, header, cells, time_col, target, covariates)

    times, fmt = _parse_times(path, header[time_col], cells[time_col], lines)
    _check_order(path, times, lines, fmt)
    try:
        freq = infer_frequency(times)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    periods = _periods(times, freq)
    _off_grid(path, times, lines, fmt, freq, periods)

    columns = [target_col, *cov_cols]
    names = [header[j] for j in columns]
    parsed = [_parse_values(cells[j]) for j in columns]
    problems = [_value_problems(name, missing, junk, lines, fill)
                for name, (_, missing, junk) in zip(names, parsed, strict=True)]
    _check_values(path, [p for p in problems if p], fill)

    gaps = _gap_times(times, freq, periods)
    table = np.stack([values for values, _, _ in parsed], axis=1)
    filled: list[str] = []
    if fill is None:
        _check_gaps(path, times, lines, fmt, freq, periods, gaps)
    elif fill == "none" and gaps:
        many = len(gaps) > 1
        filled.append(f"kept {len(gaps)} gap{'s' if many else ''} in the time column as "
                      f"{'they are' if many else 'it is'} ({_listing(_gap_phrases(gaps, fmt))} "
                      f"missing)")
    elif fill in ("ffill", "interpolate"):
        inserted = format_times(np.concatenate(gaps), fmt) if gaps else []
        times, table, all_lines = _insert_rows(times, table, lines, gaps)
        filled = _fill_report(names, table, all_lines, fill, inserted)
        table = np.stack([_fill_column(path, name, times, column, all_lines, fill)
                          for name, column in zip(names, table.T, strict=True)], axis=1)
    return Series(str(path), header[time_col], fmt, times, freq, header[target_col],
                  np.ascontiguousarray(table[:, 0]), names[1:],
                  np.ascontiguousarray(table[:, 1:]), filled)
