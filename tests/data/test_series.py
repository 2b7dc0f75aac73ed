"""Time series CSVs: the time column, frequency inference, gaps and fills (checked against NumPy
and pandas), error messages with line numbers, the calendar, and the real files in
../shared/data (airline passengers, sunspots, Melbourne temperatures, GAFA stocks)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from conftest import shared_data

from rnnlab.data.series import (
    FILLS,
    FREQS,
    Series,
    calendar_features,
    calendar_size,
    format_times,
    infer_frequency,
    next_times,
    read_series,
    season_length,
)
from rnnlab.data.text import DataError


def write(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def error(path, **kwargs) -> str:
    """The message of the DataError that read_series raises."""
    with pytest.raises(DataError) as info:
        read_series(path, **kwargs)
    return str(info.value)


def csv_of(header: str, rows: list[tuple[str, ...]]) -> str:
    return header + "\n" + "".join(",".join(row) + "\n" for row in rows)


def days(start: str, n: int, skip: tuple[int, ...] = (), weekdays_only: bool = False):
    """ISO dates from ``start``: n of them, leaving out the indices in ``skip``."""
    day, out = datetime.fromisoformat(start), []
    while len(out) < n:
        if not weekdays_only or day.weekday() < 5:
            out.append(day.strftime("%Y-%m-%d"))
        day += timedelta(days=1)
    return [d for i, d in enumerate(out) if i not in skip]


# ----------------------------------------------------------------------------- reading


def test_monthly_file(tmp_path):
    path = write(tmp_path, csv_of('"Month","Sales"', [
        ('"2020-11"', "1"), ('"2020-12"', "2.5"), ('"2021-01"', "-3"), ('"2021-02"', "4e1")]))
    s = read_series(path)
    assert isinstance(s, Series) and len(s) == 4
    assert s.path == str(path) and s.time_name == "Month" and s.target_name == "Sales"
    assert s.freq == "M" and s.time_format == "%Y-%m"
    assert s.times.dtype == np.dtype("datetime64[s]")
    assert s.times[0] == np.datetime64("2020-11-01T00:00:00")
    assert s.values.dtype == np.float64
    np.testing.assert_array_equal(s.values, [1, 2.5, -3, 40])
    assert s.covariates.shape == (4, 0) and s.covariate_names == [] and s.filled == []
    assert s.describe() == "s.csv: Sales, 4 monthly values 2020-11..2021-02 (no covariates)"
    assert format_times(s.times, s.time_format) == ["2020-11", "2020-12", "2021-01", "2021-02"]


def test_crlf_bom_quotes_blank_lines_and_spaces(tmp_path):
    text = '\ufeff"Date", "Temp"\r\n"2020-01-01", 1.5\r\n\r\n"2020-01-02",2\r\n2020-01-03 ,"3"'
    s = read_series(write(tmp_path, text))
    assert (s.time_name, s.target_name, s.freq) == ("Date", "Temp", "D")
    np.testing.assert_array_equal(s.values, [1.5, 2, 3])


@pytest.mark.parametrize("cells, fmt, freq", [
    (["1949", "1950", "1951"], "%Y", "Y"),
    (["2020/01/31", "2020/02/01", "2020/02/02"], "%Y/%m/%d", "D"),
    (["2020-01-01T00:00", "2020-01-01T01:00", "2020-01-01T02:00"], "%Y-%m-%dT%H:%M", "H"),
    (["2020-01-01 23:58:00", "2020-01-01 23:59:00", "2020-01-02 00:00:00"],
     "%Y-%m-%d %H:%M:%S", "min"),
    (["2020-01-01", "2020-04-01", "2020-07-01", "2020-10-01"], "%Y-%m-%d", "Q"),
    (["2020-01-31", "2020-02-29", "2020-03-31", "2020-04-30"], "%Y-%m-%d", "M"),
    (["2021-01-03", "2021-01-10", "2021-01-17"], "%Y-%m-%d", "W"),
])
def test_time_formats_and_frequencies(tmp_path, cells, fmt, freq):
    s = read_series(write(tmp_path, csv_of("t,y", [(c, str(i)) for i, c in enumerate(cells)])))
    assert (s.time_format, s.freq) == (fmt, freq)
    assert format_times(s.times, s.time_format) == cells


def test_time_format_is_the_most_precise(tmp_path):
    s = read_series(write(tmp_path, csv_of("t,y", [
        ("2020-01-01", "1"), ("2020-01-02 00:00", "2"), ("2020-01-03", "3")])))
    assert s.time_format == "%Y-%m-%d %H:%M"


def test_time_column_found_or_named(tmp_path):
    path = write(tmp_path, csv_of("id,when,y", [("a", "2020-01", "1"), ("b", "2020-02", "2"),
                                                  ("c", "2020-03", "3")]))
    assert read_series(path).time_name == "when"
    assert read_series(path, time="when").time_name == "when"
    assert error(path, time="date") == (
        f"{path}: expected a time column named 'date', got the columns id, when, y")
    assert error(path, time="id") == (
        f"{path}, line 2: expected a time in column 'id' (such as 1949-01, 2018-01-31 or "
        f"2018-01-31 12:00), got 'a'")


def test_no_time_column(tmp_path):
    path = write(tmp_path, csv_of("A,B,C", [("x", "1", "2"), ("y", "2", "3")]))
    assert error(path) == (
        f"{path}: expected a time column (dates such as 1949-01 or 2018-01-31), got none among "
        f"columns A, B, C; name it with --time COL")


@pytest.mark.parametrize("cell, got", [("2020-13", "'2020-13'"), ("2020-02-30", "'2020-02-30'"),
                                       ("", "an empty cell"), ("Jan 2020", "'Jan 2020'")])
def test_bad_time_names_its_line(tmp_path, cell, got):
    path = write(tmp_path, csv_of("t,y", [("2020-01", "1"), ("2020-02", "2"), (cell, "3")]))
    assert error(path, time="t") == (
        f"{path}, line 4: expected a time in column 't' (such as 1949-01, 2018-01-31 or "
        f"2018-01-31 12:00), got {got}")


def test_duplicate_time(tmp_path):
    path = write(tmp_path, csv_of("t,y", [("2020-01", "1"), ("2020-02", "2"), ("2020-02", "3")]))
    assert error(path) == f"{path}: expected one row per time, got 2020-02 on lines 3 and 4"


def test_unsorted_times(tmp_path):
    path = write(tmp_path, csv_of("t,y", [("2020-01", "1"), ("2020-03", "2"), ("2020-02", "3")]))
    assert error(path) == (f"{path}, line 4: expected times in increasing order, got 2020-02 "
                           f"after 2020-03 on line 3; sort the file by time")


def test_too_few_rows_and_irregular(tmp_path):
    path = write(tmp_path, csv_of("t,y", [("2020-01", "1"), ("2020-02", "2")]))
    assert error(path) == f"{path}: expected at least 3 times to infer a frequency, got 2"
    path = write(tmp_path, csv_of("t,y", [(d, "1") for d in
                                          ("2020-01-01", "2020-01-03", "2020-01-05", "2020-01-06",
                                           "2020-01-20")]))
    assert error(path) == (
        f"{path}: expected regularly spaced times (one minute, hour, day, business day, week, "
        f"month, quarter or year apart), got no step shared by most of the 4 steps (the most "
        f"common, 2 days, is 2 of them)")


def test_time_off_the_grid(tmp_path):
    dates = days("2020-01-01", 8)
    dates[2] += " 12:00"
    path = write(tmp_path, csv_of("t,y", [(d, "1") for d in dates]))
    assert error(path) == (f"{path}, line 4: expected a whole number of daily steps after "
                           f"2020-01-02 00:00 on line 3, got 2020-01-03 12:00")


def test_constant_series(tmp_path):
    s = read_series(write(tmp_path, csv_of("t,y", [(d, "7") for d in days("2020-01-01", 5)])))
    np.testing.assert_array_equal(s.values, np.full(5, 7.0))


def test_empty_header_only_and_ragged(tmp_path):
    for text in ("", " \n\n"):
        path = write(tmp_path, text)
        assert error(path) == f"{path}: expected a CSV header row and data rows, got an empty file"
    path = write(tmp_path, "t,y\n")
    assert error(path) == f"{path}: expected data rows after the header, got none"
    path = write(tmp_path, "t\n2020\n")
    assert error(path) == f"{path}: expected a time column and a value column, got the single " \
                          f"column 't'"
    path = write(tmp_path, "t,y\n2020-01,1\n2020-02\n")
    assert error(path) == f"{path}, line 3: expected 2 fields as in the header, got 1"
    path = write(tmp_path, "t,y,t\n2020-01,1,2\n")
    assert error(path) == f"{path}, line 1: expected distinct column names, got 't' twice"


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"t,y\n2020-01,1\n2020-02,caf\xe9\n")
    assert error(path) == (f"{path}, line 3: expected UTF-8 text, got the bytes b'\\xe9' at "
                           f"byte 25 (invalid continuation byte)")


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        read_series("no/such/file.csv")


def test_bad_fill_is_a_value_error(tmp_path):
    path = write(tmp_path, csv_of("t,y", [("2020-01", "1"), ("2020-02", "2"), ("2020-03", "3")]))
    with pytest.raises(ValueError, match=r"fill: expected one of none, ffill, interpolate \(or "
                                         r"None\), got 'zero'") as info:
        read_series(path, fill="zero")
    assert not isinstance(info.value, DataError)
    assert FILLS == ("none", "ffill", "interpolate")


# ----------------------------------------------------------------------------- target, covariates


STOCK = csv_of("Date,Open,Close,Volume,Symbol", [
    (d, f"{10 + i}.5", f"{11 + i}", f"{1000 * (i + 1)}", "X")
    for i, d in enumerate(days("2020-01-06", 6, weekdays_only=True))])


def test_several_numeric_columns_need_a_target(tmp_path):
    path = write(tmp_path, STOCK)
    assert error(path) == (f"{path}: several numeric columns: Open, Close, Volume; choose one "
                           f"with --target COL")
    assert read_series(path, target="Close").target_name == "Close"
    assert error(path, target="close") == (
        f"{path}: expected --target to name a numeric column (Open, Close, Volume), got 'close' "
        f"(not a column)")
    assert error(path, target="Symbol") == (
        f"{path}: expected --target to name a numeric column (Open, Close, Volume), got 'Symbol' "
        f"(not numeric)")
    assert "which is time" in error(path, target="Date")


def test_covariates(tmp_path):
    path = write(tmp_path, STOCK)
    s = read_series(path, target="Close", covariates=["Open", "Volume"])
    assert s.freq == "B" and s.covariate_names == ["Open", "Volume"]
    assert s.covariates.shape == (6, 2) and s.covariates.dtype == np.float64
    np.testing.assert_array_equal(s.covariates[:, 1], 1000 * np.arange(1, 7))
    assert s.describe() == ("s.csv: Close, 6 business-daily values 2020-01-06..2020-01-13 "
                            "(covariates Open, Volume)")
    # The covariates are not candidates for the target: one numeric column is left.
    assert read_series(path, covariates=["Open", "Volume"]).target_name == "Close"
    assert error(path, target="Close", covariates=["Symbol"]) == (
        f"{path}: expected covariates among the numeric columns (Open, Close, Volume), got "
        f"'Symbol'")
    assert "which is a covariate" in error(path, target="Open", covariates=["Open"])
    with pytest.raises(ValueError, match="got the string 'Open'"):
        read_series(path, target="Close", covariates="Open")


# ----------------------------------------------------------------------------- values


def test_non_numeric_values_are_always_errors(tmp_path):
    rows = [(d, "1.0") for d in days("2020-01-01", 12)]
    rows[3] = (rows[3][0], "?0.2")
    rows[5] = (rows[5][0], "1_000")
    rows[8] = (rows[8][0], "")
    rows[9] = (rows[9][0], "NA")
    path = write(tmp_path, csv_of('"Date","Temp"', rows), "daily.csv")
    assert error(path) == (f"{path}: Temp: non-numeric values '?0.2' on line 5, '1_000' on line "
                           f"7; missing values on lines 10, 11; expected numbers (or --fill "
                           f"ffill|interpolate for missing values)")
    assert error(path, fill="ffill") == (
        f"{path}: Temp: non-numeric values '?0.2' on line 5, '1_000' on line 7; expected numbers "
        f"(--fill ffill fills only empty, NA, nan or null cells)")


def test_infinity_and_lists_are_cut(tmp_path):
    rows = [(d, "inf" if i == 2 else "" if i > 3 else "1") for i, d in
            enumerate(days("2020-01-01", 12))]
    path = write(tmp_path, csv_of("t,y", rows))
    assert error(path) == (f"{path}: y: non-finite value 'inf' on line 4; missing values on "
                           f"lines 6, 7, 8, 9, 10 and 3 more; expected numbers (or --fill "
                           f"ffill|interpolate for missing values)")


def test_missing_values_with_each_fill(tmp_path):
    dates = days("2021-01-01", 6)
    cells = ["1", "", "nan", "4", "NULL", "8"]
    rows = [(d, c, "0") for d, c in zip(dates, cells, strict=True)]
    path = write(tmp_path, csv_of("t,y,x", rows))
    assert "missing values on lines 3, 4, 6" in error(path, target="y")
    assert error(path, target="y", fill="none") == (
        f"{path}: y: missing values on lines 3, 4, 6; expected numbers (--fill none keeps gaps "
        f"as they are; fill missing values with --fill ffill|interpolate)")
    s = read_series(path, target="y", covariates=["x"], fill="ffill")
    np.testing.assert_array_equal(s.values, [1, 1, 1, 4, 4, 8])
    assert s.filled == ["y: filled 3 values by carrying the previous value forward (empty on "
                        "lines 3, 4, 6)"]
    s = read_series(path, target="y", fill="interpolate")
    np.testing.assert_allclose(s.values, [1, 2, 3, 4, 6, 8])
    assert s.filled == ["y: filled 3 values by linear interpolation in time (empty on lines 3, "
                        "4, 6)"]


def test_missing_ends_cannot_be_filled(tmp_path):
    dates = days("2021-01-01", 4)
    path = write(tmp_path, csv_of("t,y", list(zip(dates, ["", "2", "3", "4"], strict=True))))
    assert error(path, fill="ffill") == (
        f"{path}, line 2: y: expected a value in the first row (--fill ffill has nothing earlier "
        f"to carry forward), got a missing value")
    path = write(tmp_path, csv_of("t,y", list(zip(dates, ["1", "2", "3", "NA"], strict=True))))
    np.testing.assert_array_equal(read_series(path, fill="ffill").values, [1, 2, 3, 3])
    assert error(path, fill="interpolate") == (
        f"{path}, line 5: y: expected a value in the last row (--fill interpolate has no value "
        f"on both sides to interpolate between), got a missing value")


def test_interpolation_matches_pandas_time_interpolation(tmp_path, rng):
    import pandas as pd

    # Monthly: the months differ in length, so interpolating in time differs from by position.
    months = pd.date_range("1999-11-01", periods=40, freq="MS")
    values = rng.normal(size=40).round(3)
    gone = np.zeros(40, dtype=bool)
    gone[[3, 4, 5, 17, 30, 31]] = True
    rows = [(t.strftime("%Y-%m"), "" if g else repr(float(v)))
            for t, v, g in zip(months, values, gone, strict=True)]
    rows = [r for i, r in enumerate(rows) if i not in (10, 20, 21)]  # and three gaps
    path = write(tmp_path, csv_of("t,y", rows))
    s = read_series(path, fill="interpolate")
    expected = pd.Series(np.where(gone, np.nan, values), index=months)
    expected.iloc[[10, 20, 21]] = np.nan
    expected = expected.interpolate(method="time")
    np.testing.assert_array_equal(s.times, months.values.astype("datetime64[s]"))
    np.testing.assert_allclose(s.values, expected.to_numpy(), rtol=1e-12)
    # And by hand: the same as np.interp over the seconds of the known values.
    seconds = s.times.astype(np.int64)
    known = ~expected.index.isin(months[gone | np.isin(np.arange(40), [10, 20, 21])])
    np.testing.assert_allclose(s.values, np.interp(seconds, seconds[known], s.values[known]))
    assert s.filled == ["inserted 3 rows for missing times (2000-09, 2001-07, 2001-08)",
                        "y: filled 9 values by linear interpolation in time (3 in inserted rows, "
                        "empty on lines 5, 6, 7, 18, 29 and 1 more)"]


def test_ffill_matches_pandas(tmp_path, rng):
    import pandas as pd

    hours = pd.date_range("2021-03-01 20:00", periods=50, freq="h")
    values = rng.normal(size=50).round(2)
    gone = rng.random(50) < 0.2
    gone[0] = False
    dropped = {7, 8, 9, 30}
    gone[list(dropped)] = False  # rows left out of the file, not empty cells
    rows = [(t.strftime("%Y-%m-%d %H:%M"), "NA" if g else repr(float(v)))
            for i, (t, v, g) in enumerate(zip(hours, values, gone, strict=True))
            if i not in dropped]
    s = read_series(write(tmp_path, csv_of("t,y", rows)), fill="ffill")
    known = pd.Series(np.where(gone, np.nan, values), index=hours).drop(hours[sorted(dropped)])
    expected = known.reindex(hours).ffill()
    assert s.freq == "H" and len(s) == 50
    np.testing.assert_array_equal(s.times, hours.values.astype("datetime64[s]"))
    np.testing.assert_array_equal(s.values, expected.to_numpy())
    assert s.filled[0] == ("inserted 4 rows for missing times (2021-03-02 03:00, 2021-03-02 "
                           "04:00, 2021-03-02 05:00, 2021-03-03 02:00)")


# ----------------------------------------------------------------------------- gaps


def test_daily_gaps_with_each_fill(tmp_path):
    dates = days("2020-01-01", 10, skip=(2, 6, 7))
    path = write(tmp_path, csv_of("Date,Temp", [(d, str(i)) for i, d in enumerate(dates)]))
    assert error(path) == (
        f"{path}: 2 gaps in the time column: 2020-01-03 missing (between lines 3 and 4), "
        f"2020-01-07..2020-01-08 (2 times) missing (between lines 6 and 7); expected consecutive "
        f"daily timestamps: fill them with --fill ffill|interpolate, or keep the rows as they are "
        f"with --fill none")
    s = read_series(path, fill="none")
    assert len(s) == 7 and s.freq == "D"
    assert s.filled == ["kept 2 gaps in the time column as they are (2020-01-03, "
                        "2020-01-07..2020-01-08 (2 times) missing)"]
    s = read_series(path, fill="ffill")
    assert format_times(s.times, s.time_format) == days("2020-01-01", 10)
    np.testing.assert_array_equal(s.values, [0, 1, 1, 2, 3, 4, 4, 4, 5, 6])
    assert s.filled == ["inserted 3 rows for missing times (2020-01-03, 2020-01-07, 2020-01-08)",
                        "Temp: filled 3 values by carrying the previous value forward (3 in "
                        "inserted rows)"]
    s = read_series(path, fill="interpolate")
    np.testing.assert_allclose(s.values, [0, 1, 1.5, 2, 3, 4, 13 / 3, 14 / 3, 5, 6])


def test_business_days_weekends_are_not_gaps(tmp_path):
    # Monday 2020-01-06 .. Friday 2020-01-17; Wednesday 2020-01-15 is a holiday.
    dates = days("2020-01-06", 10, skip=(7,), weekdays_only=True)
    path = write(tmp_path, csv_of("Date,Close", [(d, str(i)) for i, d in enumerate(dates)]))
    assert error(path) == (
        f"{path}: 1 gap in the time column: 2020-01-15 missing (between lines 8 and 9); expected "
        f"consecutive business-daily timestamps: fill them with --fill ffill|interpolate, or keep "
        f"the rows as they are with --fill none")
    s = read_series(path, fill="ffill")
    assert s.freq == "B" and format_times(s.times, "%Y-%m-%d") == days("2020-01-06", 10,
                                                                       weekdays_only=True)
    # Without the holiday, nothing is missing.
    path = write(tmp_path, csv_of("Date,Close", [(d, "1") for d in days("2020-01-06", 10,
                                                                       weekdays_only=True)]))
    assert read_series(path).filled == []


def test_daily_with_a_weekend_row_is_daily(tmp_path):
    dates = days("2020-01-06", 10, weekdays_only=True) + ["2020-01-18"]
    s = read_series(write(tmp_path, csv_of("t,y", [(d, "1") for d in dates])), fill="none")
    assert s.freq == "D"
    assert s.filled == ["kept 1 gap in the time column as it is (2020-01-11..2020-01-12 "
                        "(2 times) missing)"]


# ----------------------------------------------------------------------------- head


def test_head(tmp_path):
    path = write(tmp_path, STOCK)
    s = read_series(path, target="Close", covariates=["Open"])
    h = s.head(4)
    assert len(h) == 4 and len(s) == 6 and h.freq == "B" and h.covariates.shape == (4, 1)
    np.testing.assert_array_equal(h.values, s.values[:4])
    h.values[0] = -1
    assert s.values[0] == 11
    assert len(s.head(0)) == 0
    with pytest.raises(ValueError, match="expected an integer 0 <= n <= 6, got 7"):
        s.head(7)


# ----------------------------------------------------------------------------- calendar

# Our frequency and the pandas alias of the same grid.
PANDAS = [("min", "min", "2021-03-01 23:57"), ("H", "h", "2021-02-28 22:00"),
          ("D", "D", "2020-02-27"), ("B", "B", "2021-01-07"), ("W", "W-SUN", "2021-01-03"),
          ("M", "MS", "2019-11-01"), ("M", "ME", "2019-11-30"), ("Q", "QS", "2019-10-01"),
          ("Q", "QE", "2019-12-31"), ("Y", "YS", "1999-01-01")]


@pytest.mark.parametrize("freq, alias, start", PANDAS)
def test_infer_frequency_and_next_times_match_pandas(freq, alias, start):
    import pandas as pd

    grid = pd.date_range(start, periods=30, freq=alias).values.astype("datetime64[s]")
    assert infer_frequency(grid) == freq
    np.testing.assert_array_equal(next_times(grid[9], freq, 20), grid[10:])
    assert next_times(grid[9], freq, 0).shape == (0,)


def test_next_times_edges():
    import pandas as pd

    # Business days after a Friday and after a Saturday both start on Monday.
    friday, saturday = np.datetime64("2021-01-08"), np.datetime64("2021-01-09T09:30")
    expected = pd.bdate_range("2021-01-11", periods=7).values.astype("datetime64[s]")
    np.testing.assert_array_equal(next_times(friday, "B", 7), expected)
    np.testing.assert_array_equal(next_times(saturday, "B", 7), expected + np.timedelta64(34200,
                                                                                          "s"))
    # Mid-month days are kept; a day beyond a short month is clamped without drifting.
    mid = pd.date_range("2020-01-15", periods=13, freq=pd.DateOffset(months=1))
    np.testing.assert_array_equal(next_times(np.datetime64("2020-01-15"), "M", 12),
                                  mid.values[1:].astype("datetime64[s]"))
    got = next_times(np.datetime64("2020-01-30"), "M", 3)
    np.testing.assert_array_equal(got, np.array(["2020-02-29", "2020-03-30", "2020-04-30"],
                                                dtype="datetime64[s]"))
    with pytest.raises(ValueError, match="expected a frequency in min, H, D, B, W, M, Q, Y"):
        next_times(friday, "MS", 1)
    with pytest.raises(ValueError, match="expected an integer n >= 0, got -1"):
        next_times(friday, "D", -1)


def test_infer_frequency_errors():
    with pytest.raises(DataError, match="expected at least 3 times"):
        infer_frequency(np.array(["2020-01", "2020-02"], dtype="datetime64[s]"))


def test_season_length_and_calendar_size():
    assert {f: season_length(f) for f in FREQS} == {
        "min": None, "H": 24, "D": 7, "B": 5, "W": 52, "M": 12, "Q": 4, "Y": None}
    assert {f: calendar_size(f) for f in FREQS} == {
        "min": 4, "H": 4, "D": 4, "B": 4, "W": 2, "M": 2, "Q": 2, "Y": 0}
    with pytest.raises(ValueError):
        season_length("A")


def pair(k: float, period: float) -> list[float]:
    return [np.sin(2 * np.pi * k / period), np.cos(2 * np.pi * k / period)]


def test_calendar_features_known_dates():
    t = np.array(["1949-01-01", "1949-04-01", "1949-12-01"], dtype="datetime64[s]")
    np.testing.assert_allclose(calendar_features(t, "M"),
                               [[0, 1], [1, 0], pair(11, 12)], atol=1e-15)
    t = np.array(["2020-07-01", "2020-12-31"], dtype="datetime64[s]")
    np.testing.assert_allclose(calendar_features(t, "Q"), [[0, -1], pair(3, 4)], atol=1e-15)
    # 2021-01-04 is a Monday, the fourth day of the year.
    t = np.array(["2021-01-04"], dtype="datetime64[s]")
    np.testing.assert_allclose(calendar_features(t, "D"), [pair(3, 365.25) + [0, 1]])
    t = np.array(["2021-01-08"], dtype="datetime64[s]")  # Friday
    np.testing.assert_allclose(calendar_features(t, "B"), [pair(7, 365.25) + pair(4, 5)])
    t = np.array(["2021-01-03T06:00", "2021-01-03T12:15"], dtype="datetime64[s]")  # Sunday
    np.testing.assert_allclose(calendar_features(t, "H"), [[1, 0] + pair(6, 7),
                                                           [0, -1] + pair(6, 7)], atol=1e-15)
    np.testing.assert_allclose(calendar_features(t[1:], "min"), [[1, 0, 0, -1]], atol=1e-15)
    assert calendar_features(t, "Y").shape == (2, 0)


@pytest.mark.parametrize("freq", FREQS)
def test_calendar_features_against_datetime(freq):
    start = datetime(1969, 12, 25, 21, 50)  # across the epoch: negative offsets too
    times = [start + timedelta(minutes=797 * i) for i in range(400)]
    got = calendar_features(np.array(times, dtype="datetime64[s]"), freq)
    assert got.shape == (400, calendar_size(freq)) and got.dtype == np.float64
    cycles = {
        "M": lambda d: [(d.month - 1, 12)],
        "Q": lambda d: [((d.month - 1) // 3, 4)],
        "D": lambda d: [(d.timetuple().tm_yday - 1, 365.25), (d.weekday(), 7)],
        "B": lambda d: [(d.timetuple().tm_yday - 1, 365.25), (d.weekday(), 5)],
        "W": lambda d: [((d.timetuple().tm_yday - 1) / 7, 365.25 / 7)],
        "H": lambda d: [(d.hour, 24), (d.weekday(), 7)],
        "min": lambda d: [(d.minute, 60), (d.hour, 24)],
        "Y": lambda d: [],
    }[freq]
    expected = [[x for k, p in cycles(d) for x in pair(k, p)] for d in times]
    np.testing.assert_allclose(got.reshape(400, -1), np.array(expected).reshape(400, -1),
                               atol=1e-12)


# ----------------------------------------------------------------------------- real files


def test_airline_passengers():
    s = read_series(shared_data("timeseries/airline-passengers.csv"))
    assert (len(s), s.freq, s.values[0], s.values[-1]) == (144, "M", 112, 432)
    assert s.describe() == ("airline-passengers.csv: Passengers, 144 monthly values "
                            "1949-01..1960-12 (no covariates)")


def test_sunspots():
    s = read_series(shared_data("timeseries/monthly-sunspots.csv"))
    assert (len(s), s.freq, s.target_name) == (2820, "M", "Sunspots")
    assert format_times(s.times[[0, -1]], s.time_format) == ["1749-01", "1983-12"]


def test_melbourne_temperatures_two_missing_days():
    path = shared_data("timeseries/daily-min-temperatures.csv")
    assert error(path) == (
        f"{path}: 2 gaps in the time column: 1984-12-31 missing (between lines 1461 and 1462), "
        f"1988-12-31 missing (between lines 2921 and 2922); expected consecutive daily "
        f"timestamps: fill them with --fill ffill|interpolate, or keep the rows as they are with "
        f"--fill none")
    assert len(read_series(path, fill="none")) == 3650
    s = read_series(path, fill="interpolate")
    assert (len(s), s.freq) == (3652, "D")
    new = np.flatnonzero(np.isin(s.times, np.array(["1984-12-31", "1988-12-31"],
                                                   dtype="datetime64[s]")))
    np.testing.assert_allclose(s.values[new], (s.values[new - 1] + s.values[new + 1]) / 2)


def test_apple_trading_days():
    path = shared_data("gafa-stock/AAPL.csv")
    message = error(path, target="Close")
    assert message.startswith(f"{path}: 46 gaps in the time column: 2014-01-01 missing "
                              f"(between lines 2 and 3)")
    assert "expected consecutive business-daily timestamps" in message
    s = read_series(path, target="Close", covariates=["Open", "Volume"], fill="none")
    assert (len(s), s.freq) == (1259, "B")
    assert s.covariates.shape == (1259, 2)
    assert format_times(s.times[[0, -1]], s.time_format) == ["2013-12-31", "2018-12-31"]
    assert s.values[0] == pytest.approx(80.145714) and s.values[-1] == pytest.approx(157.740005)
    assert s.covariates[0, 1] == 55771100
