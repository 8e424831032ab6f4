"""`/media/<path>`: the app at base_url serves the lesson images emails link to, and nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from newsletter.project import Project
from newsletter.web import create_app


@pytest.fixture
def client(rich_project: Project) -> Iterator[TestClient]:
    app = create_app(rich_project, studio=False, live_reload=False)
    with TestClient(app, base_url="https://running.example.com") as test_client:
        yield test_client


def test_the_image_an_email_links_to_is_served_with_a_long_cache(client: TestClient, rich_project: Project) -> None:
    html = rich_project.render(rich_project.sample_subscriber(), "trails").html
    url = re.search(r'src="(https://running\.example\.com/media/[^"]+)"', html)
    assert url
    response = client.get(url[1])
    image = rich_project.settings.newsletter.lessons / "images" / "trail.png"
    assert response.status_code == 200
    assert response.content == image.read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert "immutable" in response.headers["cache-control"]
    assert client.head(url[1]).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/media/01-muscle.md",  # a lesson, even unsent, is never served
        "/media/series.toml",
        "/media/images/missing.png",
        "/media/../config.toml",
        "/media/%2e%2e/config.toml",
        "/media/images/../../config.toml",
    ],
)
def test_only_images_inside_the_lessons_folder_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404


def test_a_link_pointing_outside_the_folder_is_refused(client: TestClient, rich_project: Project) -> None:
    outside = rich_project.settings.root / "secret.png"
    outside.write_bytes(b"\x89PNG secret")
    (rich_project.settings.newsletter.lessons / "images" / "leak.png").symlink_to(outside)
    assert client.get("/media/images/leak.png").status_code == 404
