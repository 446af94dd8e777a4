"""The official Python SDK (hubspot-api-client) making brokered calls through hubgate: no
access token at all, the install named by X-Hubgate-Portal; hubgate sends the token.

Run by scripts/sdk-test.sh with HUBGATE_URL and HUBGATE_PORTAL (an imported install).
"""
import os
import sys

from hubspot import HubSpot

client = HubSpot(host=os.environ["HUBGATE_URL"])
contacts = client.crm.contacts.basic_api
contacts.api_client.set_default_header("X-Hubgate-Portal", os.environ["HUBGATE_PORTAL"])

created = contacts.create(
    simple_public_object_input_for_create={"properties": {"email": "grace@example.com"}}
)
fetched = contacts.get_by_id(created.id)
if fetched.properties.get("email") != "grace@example.com":
    print("python brokered: FAILED: the contact did not round-trip", file=sys.stderr)
    sys.exit(1)
page = contacts.get_page(limit=5)
if not page.results:
    print("python brokered: FAILED: the page is empty", file=sys.stderr)
    sys.exit(1)
print("python brokered: 3 calls with no token, all answered")
