import pytest


@pytest.fixture(autouse=True)
def own_qsettings(tmp_path_factory):
    """Every test's widgets keep their settings in a folder of its own, never the user's."""
    from qtpy.QtCore import QSettings

    folder = str(tmp_path_factory.mktemp("qsettings"))
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, folder)
    return folder
