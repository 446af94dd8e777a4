"""The official Python SDK (hubspot-api-client) used unchanged through hubgate.

Only `host=` differs from a production integration. Run by scripts/sdk-test.sh with
HUBGATE_URL (hubgate's base URL) and HUBSPOT_TOKEN (a simulator token).
"""
import os
import sys

from hubspot import HubSpot
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException, NotFoundException

client = HubSpot(access_token=os.environ["HUBSPOT_TOKEN"], host=os.environ["HUBGATE_URL"])
contacts = client.crm.contacts
checks = 0


def check(condition, what):
    global checks
    if not condition:
        print(f"python sdk: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


created = contacts.basic_api.create(
    simple_public_object_input_for_create=SimplePublicObjectInputForCreate(
        properties={"email": "ada@example.com", "firstname": "Ada"}
    )
)
check(created.id and created.properties["email"] == "ada@example.com", "create returns the contact")

fetched = contacts.basic_api.get_by_id(contact_id=created.id, properties=["email", "firstname"])
check(fetched.id == created.id and fetched.properties["firstname"] == "Ada", "get by id")
check(fetched.created_at is not None, "timestamps deserialize")

updated = contacts.basic_api.update(
    contact_id=created.id,
    simple_public_object_input=SimplePublicObjectInput(properties={"lastname": "Lovelace"}),
)
check(updated.properties.get("lastname") == "Lovelace", "update")

page = contacts.basic_api.get_page(limit=10)
check(any(c.id == created.id for c in page.results), "list contains the contact")

found = contacts.search_api.do_search(
    public_object_search_request=PublicObjectSearchRequest(
        filter_groups=[{"filters": [{"propertyName": "email", "operator": "EQ", "value": "ada@example.com"}]}],
        properties=["email"],
        limit=10,
    )
)
check(found.total >= 1 and found.results[0].properties["email"] == "ada@example.com", "search")

batch = contacts.batch_api.create(
    batch_input_simple_public_object_batch_input_for_create=BatchInputSimplePublicObjectBatchInputForCreate(
        inputs=[
            SimplePublicObjectBatchInputForCreate(properties={"email": f"user{i}@example.com"})
            for i in range(5)
        ]
    )
)
check(batch.status == "COMPLETE" and len(batch.results) == 5, "batch create")

read = contacts.batch_api.read(
    batch_read_input_simple_public_object_id=BatchReadInputSimplePublicObjectId(
        inputs=[SimplePublicObjectId(id=c.id) for c in batch.results],
        properties=["email"],
        properties_with_history=[],
    )
)
check(len(read.results) == 5, "batch read")

everyone = contacts.get_all()
check(len(everyone) == 6, f"get_all pages through every contact (got {len(everyone)})")

contacts.basic_api.archive(contact_id=created.id)
try:
    contacts.basic_api.get_by_id(contact_id=created.id)
    check(False, "archived contact is gone")
except NotFoundException as e:
    check(e.status == 404, "404 after archive")

bad = HubSpot(access_token="pat-na1-not-a-real-token", host=os.environ["HUBGATE_URL"])
try:
    bad.crm.contacts.basic_api.get_page(limit=1)
    check(False, "an invalid token is refused")
except ApiException as e:
    check(e.status == 401, "HubSpot's 401 passes through")

print(f"python sdk: {checks} checks passed")
